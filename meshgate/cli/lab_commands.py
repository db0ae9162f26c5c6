"""``meshgate lab up | down | status | exec``: containerlab topologies on network namespaces
(see ``meshgate/lab/README.md``). Other lab commands join this group."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click

from meshgate.cli.common import fail
from meshgate.cli.exits import Exit

LAB_DIR = click.Path(exists=True, path_type=Path)


@click.group()
def lab() -> None:
    """containerlab topologies on network namespaces: up, check, status, exec, trace, scenario, down."""


@lab.command()
@click.argument("directory", type=LAB_DIR)
@click.option("--timeout", default=300.0, show_default=True, help="Seconds until every node must be ready.")
@click.option(
    "--cleanup-on-failure",
    is_flag=True,
    help="Bring the lab down when it fails to get ready (by default it stays up for inspection).",
)
def up(directory: Path, timeout: float, cleanup_on_failure: bool) -> None:
    """Deploy DIRECTORY/topology.clab.yml; exit 0 once every exec succeeded and every
    healthcheck is healthy."""
    from meshgate.lab.errors import LabAlreadyUp, LabError, LabUpFailed, TopologyInvalid
    from meshgate.lab.lifecycle import up as lab_up
    from meshgate.lab.progress import make_progress

    progress = make_progress(sys.stdout, click.echo)
    try:
        running = lab_up(directory, timeout=timeout, cleanup_on_failure=cleanup_on_failure, progress=progress)
    except TopologyInvalid as exc:
        progress.close()
        fail(str(exc), Exit.INVALID)
    except LabAlreadyUp as exc:
        progress.close()
        fail(str(exc), Exit.CONFLICT)
    except LabUpFailed as exc:
        progress.close()
        hint = (
            ""
            if cleanup_on_failure
            else f"\n(the lab stays up for inspection: meshgate lab down {directory})"
        )
        fail(f"{exc}{hint}", Exit.UNAVAILABLE)
    except (LabError, FileNotFoundError) as exc:
        progress.close()
        fail(str(exc), Exit.ERROR)
    progress.close()
    for note in running.state.plan.notes:
        click.echo(f"note: {note}")
    click.echo(f"lab {running.name} is up ({len(running.nodes)} nodes): meshgate lab status {directory}")


@lab.command()
@click.argument("directory", type=LAB_DIR)
def down(directory: Path) -> None:
    """Stop every process of the lab and delete its namespaces (idempotent)."""
    from meshgate.lab.errors import LabError
    from meshgate.lab.lifecycle import down as lab_down

    try:
        reports = lab_down(directory)
    except LabError as exc:
        fail(str(exc), Exit.ERROR)
    if not reports:
        click.echo(f"no lab is running from {directory}: nothing to do")
    for report in reports:
        click.echo(f"lab {report.lab} is down ({len(report.namespaces)} namespaces deleted)")


@lab.command()
@click.argument("directory", type=LAB_DIR)
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
def status(directory: Path, output: str) -> None:
    """Nodes, their namespaces, management addresses, processes and health."""
    from meshgate.lab.errors import LabNotRunning
    from meshgate.lab.running import find_state
    from meshgate.lab.status import lab_status

    try:
        state = find_state(directory)
    except LabNotRunning as exc:
        fail(str(exc), Exit.NOT_FOUND)
    found = lab_status(state)
    if output == "json":
        click.echo(json.dumps(found, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    supervisor = found["supervisor"]
    click.echo(f"lab {found['name']} ({found['phase']}), run {found['run_id']}, supervisor "
               f"{'running' if supervisor and supervisor['running'] else 'NOT running'}")  # fmt: skip
    if found["failure"]:
        click.echo(
            f"failed: {found['failure']['node']} {found['failure']['stage']}: {found['failure']['message']}"
        )
    grid = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for column in ("NODE", "NETNS", "MGMT IPV4", "PID", "STATE", "HEALTH", "STAGE"):
        grid.add_column(column, no_wrap=True)
    for node in found["nodes"]:
        grid.add_row(
            node["name"],
            node["netns"],
            node["mgmt_ipv4"] or "-",
            str(node["pid"] or "-"),
            node["state"],
            node["health"],
            node["stage"],
        )
    console = Console(soft_wrap=True, width=10_000, highlight=False)
    with console.capture() as captured:
        console.print(grid)
    click.echo("\n".join(line.rstrip() for line in captured.get().splitlines()))


@lab.command(name="exec", context_settings={"ignore_unknown_options": True})
@click.argument("directory", type=LAB_DIR)
@click.argument("args", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option(
    "--label", "labels", multiple=True, help="key=value: run on every node with these labels (then no NODE)."
)
def exec_command(directory: Path, args: tuple[str, ...], labels: tuple[str, ...]) -> None:
    """Run a command inside a node: meshgate lab exec DIR NODE -- CMD... (like docker exec);
    exits with the command's code."""
    from meshgate.lab.errors import LabNotRunning
    from meshgate.lab.running import RunningLab

    try:
        running = RunningLab.find(directory)
        if labels:
            wanted = dict(label.split("=", 1) for label in labels if "=" in label)
            if len(wanted) != len(labels):
                fail("--label takes key=value", Exit.USAGE)
            nodes = [node.name for node in running.select(wanted)]
            if not nodes:
                fail(f"no node of lab {running.name} has labels {wanted}", Exit.NOT_FOUND)
            command = list(args)
        else:
            nodes, command = [args[0]], list(args[1:])
            running.node(args[0])
        if not command:
            fail("no command given (meshgate lab exec DIR NODE -- CMD...)", Exit.USAGE)
        worst = 0
        for node in nodes:
            if len(nodes) > 1:
                click.echo(f"== {node}", err=True)
                sys.stdout.flush()
            argv = running.popen_argv(node, command)
            code = subprocess.call(argv, env=running.node(node).env, cwd="/")
            worst = worst or code
    except LabNotRunning as exc:
        fail(str(exc), Exit.NOT_FOUND)
    sys.exit(worst)


def _add_lab_commands() -> None:
    """check, trace and scenario live in their own modules (scapy only loads for trace)."""
    from meshgate.cli.lab_check_command import check
    from meshgate.cli.lab_scenario_command import scenario
    from meshgate.cli.lab_trace_command import trace

    for command in (check, trace, scenario):
        lab.add_command(command)


_add_lab_commands()
