"""``meshgate demo``: a whole two-region mesh on one machine, on the embedded defaults, no root.

Every component runs as its own ``meshgate`` process, a child of the demo: the global CP on
SQLite; zone CPs for eu-west and us-east; per zone an ingress, two sample workloads
(``meshgate workload run``) each behind a local proxy, and an edge serving the global service
``web`` on loopback ports (``listen.portOffset``; no BGP, which needs root). Ports are free ones
found at start, data goes to a fresh temporary directory (or ``--data-dir``), each process logs to
``<data-dir>/logs/``.

Once a request through every edge is answered by a workload in its region, the demo prints the
global CP's URL and how to point the CLI at it, each edge's URLs and ``curl`` commands that work,
then a live status (zones and their sync, healthy instances, the zone each edge serves from and
the RTTs it probes) until Ctrl-C or SIGTERM, which stops everything in order (edges, proxies,
workloads, zone CPs, the global CP) and exits 0. ``--once`` stops after the first status. A
process that fails to start is named with the end of its log; the rest are stopped; exit 1.
"""

from __future__ import annotations

import asyncio
import shlex
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from meshgate.demo.run import DemoMesh
    from meshgate.demo.status import Status


@click.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep state and logs here [default: a fresh temporary directory, removed after a clean stop].",
)
@click.option("--once", is_flag=True, help="Stop everything after the first successful check and status.")
@click.option(
    "--refresh",
    default=2.0,
    show_default=True,
    type=click.FloatRange(min=0.2),
    help="Seconds between status updates.",
)
@click.option(
    "--lab",
    is_flag=True,
    help="Root: run labs/two-region on network namespaces instead, with BIRD, FRR and ExaBGP.",
)
def demo(data_dir: Path | None, once: bool, refresh: float, lab: bool) -> None:
    """Run a whole two-region mesh on this machine: control planes, proxies, workloads, edges."""
    if lab:
        from meshgate.demo.lab import find_lab, run_lab_demo

        try:
            directory = find_lab()
        except FileNotFoundError as exc:
            click.echo(f"error: {exc}", err=True)
            raise SystemExit(7) from None
        raise SystemExit(run_lab_demo(directory, once=once, echo=click.echo))
    root = data_dir.absolute() if data_dir is not None else Path(tempfile.mkdtemp(prefix="meshgate-demo-"))
    code = asyncio.run(_demo(root, once, refresh))
    if data_dir is None and code == 0:
        shutil.rmtree(root, ignore_errors=True)
        click.echo(f"meshgate demo: removed {root} (--data-dir keeps state and logs)")
    elif data_dir is None:
        click.echo(f"meshgate demo: kept {root} (logs in {root / 'logs'})", err=True)
    raise SystemExit(code)


def _say(line: str) -> None:
    click.echo(line)


async def _demo(root: Path, once: bool, refresh: float) -> int:
    from meshgate.demo.launcher import StartFailed
    from meshgate.demo.run import DemoError, DemoMesh

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    mesh = DemoMesh(root, _say)
    _say(f"meshgate demo: starting a two-region mesh in {root} (logs: {mesh.plan.logs})")
    code = 0
    try:
        starting = asyncio.create_task(mesh.start())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not starting.done():
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            _say("meshgate demo: interrupted while starting")
            return code
        starting.result()
        _summary(mesh)
        _say(
            f"meshgate demo: ready in {mesh.elapsed():.1f} s." + ("" if once else " Ctrl-C stops everything.")
        )
        await _status(mesh, stop, once, refresh)
    except StartFailed as failed:
        code = 1
        component = failed.component
        click.echo(f"meshgate demo: {component.name} failed to start: {failed.reason}", err=True)
        click.echo(f"--- the end of {component.log} ---\n{component.tail()}\n---", err=True)
    except DemoError as exc:
        code = 1
        click.echo(f"meshgate demo: {exc}", err=True)
    finally:
        await _stop(mesh, code)
    return code


def _summary(mesh: DemoMesh) -> None:
    from meshgate.demo.resources import HOSTNAME

    plan = mesh.plan
    _say("")
    _say(f"global CP  {mesh.global_url}  (store: SQLite in {plan.global_dir})")
    _say("  use the CLI against it:")
    _say(
        f"  export MESHGATE_SERVER={mesh.global_url} MESHGATE_TOKEN_FILE={shlex.quote(str(plan.admin_token))}"
    )
    _say("  meshgate get zones; meshgate get dataplanes; meshgate get globalservices; meshgate edge status")
    ca = shlex.quote(str(plan.ca_file))
    for edge in plan.edges:
        http, https = mesh.urls(edge)
        _say("")
        _say(f"edge {edge.name} (region {edge.zone})  {http}  {https}")
        _say(f"  curl -H 'Host: {HOSTNAME}' {http}")
        _say(
            f"  curl --cacert {ca} --resolve {HOSTNAME}:{edge.https_port}:{plan.host} "
            f"https://{HOSTNAME}:{edge.https_port}/"
        )
    _say("")
    _say(f"logs: {plan.logs} (one file per process)")


async def _status(mesh: DemoMesh, stop: asyncio.Event, once: bool, refresh: float) -> None:
    from meshgate.demo.status import plain, rich

    if once or not sys.stdout.isatty():
        while (status := await _collect(mesh, stop)) is not None:
            for line in plain(status):
                _say(line)
            if once or await _wait(stop, refresh):
                return
        return
    from rich.live import Live

    status = await _collect(mesh, stop)
    if status is None:
        return
    with Live(rich(status), auto_refresh=False) as live:
        while not await _wait(stop, refresh) and (status := await _collect(mesh, stop)) is not None:
            live.update(rich(status), refresh=True)


async def _collect(mesh: DemoMesh, stop: asyncio.Event) -> Status | None:
    """The status now, or None when a signal comes first (a slow answer does not hold up a stop)."""
    from meshgate.demo.status import collect

    collecting = asyncio.create_task(collect(mesh))
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({collecting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if collecting.done():
        return collecting.result()
    collecting.cancel()
    await asyncio.gather(collecting, return_exceptions=True)
    return None


async def _wait(event: asyncio.Event, timeout: float) -> bool:
    """Whether ``event`` was set within ``timeout`` seconds."""
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        return False
    return True


async def _stop(mesh: DemoMesh, code: int) -> None:
    running = sum(c.running for c in mesh.components)
    if running:
        _say(f"meshgate demo: stopping {running} processes: edges, proxies, workloads, zone CPs, global CP")
    trouble = await mesh.stop()
    for line in trouble:
        click.echo(f"meshgate demo: {line}", err=True)
    if running:
        _say(f"meshgate demo: stopped{'' if code == 0 else ' after the failure'}")
