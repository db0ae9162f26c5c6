"""``meshgate proxy run``: a local proxy or a zone ingress (imports only the data plane)."""

from __future__ import annotations

from pathlib import Path

import click

from meshgate.cli.ca_pin import ca_fingerprint_option, check_token


@click.group()
def proxy() -> None:
    """Local proxies and zone ingresses."""


@proxy.command()
@click.option("--role", type=click.Choice(["local", "ingress"]), required=True)
@click.option(
    "--zone-cp", "zone_cp_url", required=True, help="The zone CP's proxy-facing address, tls://HOST:5682"
)
@click.option(
    "--token-file", type=click.Path(path_type=Path), help="Join token (--role proxy or ingress); first start."
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    required=True,
    help="Identity and last good configuration; the proxy serves from them while the zone CP is away.",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, path_type=Path),
    required=True,
    help="What this proxy fronts: service, instances, health check, listeners (YAML or JSON).",
)
@click.option(
    "--workers", default=1, show_default=True, help="Processes sharing the listeners (SO_REUSEPORT)."
)
@click.option(
    "--cert-ttl", default=None, type=float, help="Ask for certificates this short (seconds; for tests)."
)
@click.option(
    "--drain-timeout", default=30.0, show_default=True, help="Seconds open connections get after SIGTERM."
)
@ca_fingerprint_option
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]))
def run(role: str, zone_cp_url: str, token_file: Path | None, data_dir: Path, config_file: Path | None,
        workers: int, cert_ttl: float | None, drain_timeout: float, ca_fingerprint: str | None,
        log_level: str) -> None:  # fmt: skip
    """Run a proxy until SIGTERM (open connections get a deadline to finish)."""
    check_token(token_file, ca_fingerprint)
    from zones.process import main as run_proxy

    raise SystemExit(
        run_proxy(role=role, zone_cp_url=zone_cp_url, token_file=token_file, data_dir=data_dir,
                  config_file=config_file, workers=workers, cert_ttl=cert_ttl, log_level=log_level,
                  drain_timeout=drain_timeout)
    )  # fmt: skip
