"""``meshgate demo``: today a global CP on SQLite with the demo resources applied.

Later milestones grow it into the whole multi-region mesh (zone CPs, proxies, edges).
"""

from __future__ import annotations

import asyncio
import signal
import tempfile
from pathlib import Path

import click


@click.command()
@click.option(
    "--data-dir", type=click.Path(path_type=Path), help="Keep state here (default: a fresh temp dir)."
)
@click.option(
    "--listen", default="127.0.0.1:0", show_default=True, help="API address; port 0 picks a free one."
)
@click.option("--once", is_flag=True, help="Exit after applying and showing the resources.")
def demo(data_dir: Path | None, listen: str, once: bool) -> None:
    """Run a global CP with a two-region example mesh applied."""
    import uvloop

    from meshgate.telemetry import logs

    logs.configure("demo", "warning")
    with tempfile.TemporaryDirectory(prefix="meshgate-demo-") as tmp:
        uvloop.run(_demo(data_dir or Path(tmp), listen, once))


async def _demo(data_dir: Path, listen: str, once: bool) -> None:
    from global_cp.config import GlobalCPConfig
    from global_cp.server import GlobalCP
    from meshgate.cli.output import table
    from meshgate.clock import SystemClock
    from meshgate.demo.resources import documents
    from meshgate.resources.kinds import REGISTRY
    from meshgate.resources.views import api_document

    cp = GlobalCP(GlobalCPConfig(data_dir=data_dir, listen=listen, zone_listen=_zone_listen(listen)))
    await cp.start()
    try:
        await cp.wait_ready()
        service = cp.service
        report = await service.apply(documents(SystemClock().now()))
        click.echo(f"meshgate demo: global CP at {cp.url} (store: {cp.config.store})")
        for item in report.items:
            click.echo(f"  {item.kind.lower()}/{item.name} {item.outcome.value}")
        for kind in ("Zone", "GlobalService", "Edge"):
            listing = await service.list(kind)
            click.echo(f"\n{REGISTRY[kind].plural}:")
            click.echo(table(REGISTRY[kind], [api_document(r) for r in listing.items]))
        click.echo(
            f"\nTry: MESHGATE_SERVER={cp.url} MESHGATE_TOKEN_FILE={cp.config.admin_token} "
            "meshgate get globalservices -o yaml"
        )
        if once:
            return
        click.echo("Press Ctrl-C to stop.")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await cp.stop()


def _zone_listen(listen: str) -> str:
    """The zone-facing listener on the same host; a free port when the API's is free too."""
    host, _, port = listen.rpartition(":")
    return f"{host}:0" if port == "0" else f"{host}:5685"
