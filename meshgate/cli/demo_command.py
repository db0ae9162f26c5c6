"""``meshgate demo``: a whole multi-region mesh on one machine, on the embedded defaults.

Today: a global CP (SQLite) and a zone CP per region, enrolled and syncing, with a proxy's
instance reported in one region and known in the other. Later milestones add proxies,
ingresses and anycast edges.
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
@click.option("--once", is_flag=True, help="Exit after bringing the mesh up and showing it.")
def demo(data_dir: Path | None, listen: str, once: bool) -> None:
    """Run a two-region mesh: global CP, zone CPs, resources applied."""
    import uvloop

    from meshgate.telemetry import logs

    logs.configure("demo", "warning")
    with tempfile.TemporaryDirectory(prefix="meshgate-demo-") as tmp:
        uvloop.run(_demo(data_dir or Path(tmp), listen, once))


async def _demo(data_dir: Path, listen: str, once: bool) -> None:
    from global_cp.api.zone_status import zone_statuses
    from meshgate.cli.output import table
    from meshgate.demo.run import DemoMesh
    from meshgate.resources.kinds import REGISTRY
    from meshgate.resources.views import api_document

    mesh = DemoMesh(data_dir, listen)
    try:
        await mesh.start()
        cp = mesh.cp
        assert cp is not None
        click.echo(
            f"meshgate demo: global CP at {cp.url} (zones sync at {cp.zone_url}; store {cp.config.store})"
        )
        for zone, zone_cp in mesh.zones.items():
            click.echo(f"  zone CP {zone}: {zone_cp.url}")
        statuses = zone_statuses(cp.mirror, cp.clock.now())
        for kind in ("Zone", "GlobalService", "Edge", "Dataplane", "CrossZoneEndpoints"):
            docs = [api_document(r) for r in (await cp.service.list(kind)).items]
            for doc in docs:
                if kind == "Zone":
                    doc["status"] = statuses.get(doc["metadata"]["name"], {})
            click.echo(f"\n{REGISTRY[kind].plural}:")
            click.echo(table(REGISTRY[kind], docs))
        click.echo(
            f"\nTry: MESHGATE_SERVER={cp.url} MESHGATE_TOKEN_FILE={cp.config.admin_token} meshgate get zones"
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
        await mesh.stop()
