"""``meshgate workload run``: a sample HTTP workload for the demo and the labs.

Answers every request 200 (``hello from NAME in zone ZONE``, header ``X-Workload: NAME``),
records the requests that carry ``X-Request-Tag`` (the newest ``--keep``) and lists them at
``GET /_meshgate/received``; ``/_meshgate/healthz`` is its health check. Stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def workload() -> None:
    """A sample HTTP workload (for the demo and labs) that records tagged requests."""


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise click.BadParameter(f"{value!r} is not HOST:PORT (port 0 picks a free one)")
    return host.strip("[]"), int(port)


@workload.command()
@click.option("--listen", "listen", required=True, help="HOST:PORT to serve on; port 0 picks a free one.")
@click.option("--name", required=True, help="This instance's name, in every answer (X-Workload).")
@click.option("--zone", default="", help="The zone it runs in, named in every answer.")
@click.option(
    "--keep", default=100_000, show_default=True, type=click.IntRange(min=1),
    help="Tagged requests kept for /_meshgate/received (the oldest are dropped first).",
)  # fmt: skip
@click.option(
    "--journal", type=click.Path(dir_okay=False, path_type=Path),
    help="Also append each tagged request to this file (JSON lines) and read it back at start.",
)  # fmt: skip
def run(listen: str, name: str, zone: str, keep: int, journal: Path | None) -> None:
    """Serve until SIGTERM or SIGINT."""
    import asyncio

    from meshgate.workload.ledger import Ledger
    from meshgate.workload.server import Workload, serve

    host, port = _listen(listen)

    def listening(url: str) -> None:
        click.echo(f"workload {name} listening on {url}")

    ledger = Ledger(keep, journal=journal)
    try:
        asyncio.run(serve(Workload(name, zone, ledger), host, port, listening))
    except OSError as exc:
        click.echo(f"error: workload {name} cannot listen on {listen}: {exc}", err=True)
        raise SystemExit(1) from None
    finally:
        ledger.close()
