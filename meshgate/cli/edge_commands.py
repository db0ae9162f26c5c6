"""``meshgate edge run | drain | undrain | status``.

``run`` imports only the edge process (no control-plane stack); the others talk to the global
CP's API. A drain is a field of the ``Edge`` resource (``spec.drain``), written back at the
resourceVersion it was read at and read again when someone else wrote first.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click

from meshgate.cli.ca_pin import ca_fingerprint_option, check_token
from meshgate.cli.client import ApiError, Client
from meshgate.cli.common import connection_options, fail, handle_errors, make_client
from meshgate.cli.exits import Exit

SIGNALS = ("graceful-shutdown", "as-path-prepend")
ATTEMPTS = 8  # reads and writes of one Edge before giving up to other writers


@click.group()
def edge() -> None:
    """Anycast edges: run one, drain or undrain it, show what it reports."""


@edge.command()
@click.option(
    "--zone-cp", "zone_cp_url", required=True, help="The zone CP's proxy-facing address, tls://HOST:5682"
)
@click.option("--token-file", type=click.Path(path_type=Path), help="Join token (--role edge); first start.")
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    required=True,
    help="Identity and last good configuration; the edge serves from them while the zone CP is away.",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="This edge's own settings: name, admin, listeners, probes, drain, BGP speaker (YAML or JSON).",
)
@click.option(
    "--cert-ttl", default=None, type=float, help="Ask for certificates this short (seconds; for tests)."
)
@ca_fingerprint_option
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]))
def run(zone_cp_url: str, token_file: Path | None, data_dir: Path, config_file: Path | None,
        cert_ttl: float | None, ca_fingerprint: str | None, log_level: str) -> None:  # fmt: skip
    """Run an edge until SIGTERM: serve global services, announce their VIPs while healthy."""
    check_token(token_file, ca_fingerprint)
    from edge.process import main as run_edge

    raise SystemExit(
        run_edge(zone_cp_url=zone_cp_url, token_file=token_file, data_dir=data_dir,
                 config_file=config_file, cert_ttl=cert_ttl, log_level=log_level)
    )  # fmt: skip


@edge.command()
@click.argument("name")
@click.option("--reason", default=None, help="Why, for whoever reads the Edge (kept when not given).")
@click.option(
    "--signal",
    "signals",
    multiple=True,
    type=click.Choice(SIGNALS),
    help="How routes are made less preferred before they are withdrawn (repeatable) "
    "[default graceful-shutdown; kept when not given].",
)
@connection_options
@handle_errors
def drain(name: str, reason: str | None, signals: tuple[str, ...], **kwargs: Any) -> None:
    """Ask edge NAME to drain: signal its routes away, let connections finish, withdraw."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    click.echo(update_edge(make_client(kwargs), name, lambda spec: drain_spec(spec, reason, signals, now)))


@edge.command()
@click.argument("name")
@connection_options
@handle_errors
def undrain(name: str, **kwargs: Any) -> None:
    """Cancel the drain of edge NAME: it announces again once healthy."""
    click.echo(update_edge(make_client(kwargs), name, undrain_spec))


@edge.command()
@click.argument("name", required=False)
@click.option("-o", "--output", type=click.Choice(["table", "yaml", "json"]), default="table")
@connection_options
@handle_errors
def status(name: str | None, output: str, **kwargs: Any) -> None:
    """Show what edges report (sessions, announcements, drain), or edge NAME's."""
    from meshgate.cli.resource_commands import show
    from meshgate.resources.kinds import REGISTRY

    client = make_client(kwargs)
    try:
        show(client, REGISTRY["EdgeStatus"], name, None, output)
    except ApiError as exc:
        if exc.status == 404 and name is not None:
            fail(f"edge {name!r} has reported no status (no EdgeStatus/{name})", Exit.NOT_FOUND)
        raise


# A change to an Edge's spec: changes ``spec`` in place and says what it did, or returns
# (False, message) when there is nothing to write.
Change = Callable[[dict[str, Any]], tuple[bool, str]]


def drain_spec(
    spec: dict[str, Any], reason: str | None, signals: tuple[str, ...], now: str
) -> tuple[bool, str]:
    current = spec.get("drain")
    if isinstance(current, dict):
        since = current.get("requestedAt") or now
        wanted = {
            "reason": current.get("reason", "") if reason is None else reason,
            "requestedAt": since,
            "signals": list(signals) or current.get("signals") or ["graceful-shutdown"],
        }
        if wanted == current:
            return False, f"already draining since {since} ({_summary(wanted)})"
        spec["drain"] = wanted
        return True, f"already draining since {since}; now {_summary(wanted)}"
    spec["drain"] = {
        "reason": reason or "",
        "requestedAt": now,
        "signals": list(signals) or ["graceful-shutdown"],
    }
    return True, f"drain requested at {now} ({_summary(spec['drain'])})"


def undrain_spec(spec: dict[str, Any]) -> tuple[bool, str]:
    current = spec.pop("drain", None)
    if not isinstance(current, dict):
        return False, "not draining"
    return True, f"drain cancelled (requested at {current.get('requestedAt') or 'an unknown time'})"


def _summary(drain: dict[str, Any]) -> str:
    reason = f"; reason: {drain['reason']}" if drain.get("reason") else ""
    return f"signals: {', '.join(drain['signals'])}{reason}"


def update_edge(client: Client, name: str, change: Change) -> str:
    """Read Edge ``name``, change its spec and write it back at the version read; read again
    and redo the change when another writer came first. Returns what was done."""
    path = f"/api/v1/edges/{quote(name, safe='')}"
    attempts = 0
    while True:
        attempts += 1
        try:
            doc = client.request("GET", path)
        except ApiError as exc:
            if exc.status == 404:
                fail(f"no Edge named {name!r} at the global CP", Exit.NOT_FOUND)
            raise
        spec = doc["spec"]
        write, message = change(spec)
        if not write:
            return f"edge/{name} {message}"
        body = {"apiVersion": doc["apiVersion"], "kind": "Edge", "metadata": doc["metadata"], "spec": spec}
        try:
            client.request("PUT", path, json_body=body)
        except ApiError as exc:
            if exc.status == 409 and exc.reason == "Conflict" and attempts < ATTEMPTS:
                continue  # changed since read (or other writers came first): read it again
            if exc.status == 404:
                fail(f"no Edge named {name!r} at the global CP (deleted meanwhile)", Exit.NOT_FOUND)
            raise
        return f"edge/{name} {message}"
