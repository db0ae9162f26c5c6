"""``meshgate lab trace DIR --from NODE --to VIP``: which node each tagged probe reached.

Needs scapy (``pip install 'meshgate[lab]'``) in the agents' processes, never in this one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import click

from meshgate.cli.exits import Exit
from meshgate.cli.lab_check_command import find_lab
from meshgate.lab.checks import format_duration, parse_duration
from meshgate.lab.trace import Probe, TraceError, TraceResult, TraceUnavailable
from meshgate.lab.trace import trace as run_trace


def _offset(stamp: float | None, base: float) -> str:
    return "-" if stamp is None else f"+{stamp - base:.3f}s"


def _where(probe: Probe) -> tuple[str, str]:
    if probe.error is not None:
        return "not sent", probe.error
    if probe.reached is None:
        return "lost", ""
    return probe.reached.node, probe.reached.interface


def _runs(result: TraceResult) -> Iterator[list[Probe]]:
    """Consecutive probes that ended at the same node on the same interface (or were lost)."""
    current: list[Probe] = []
    for probe in result.probes:
        if current and (_where(current[-1]) != _where(probe) or current[-1].number + 1 != probe.number):
            yield current
            current = []
        current.append(probe)
    if current:
        yield current


def render_trace(result: TraceResult, per_probe: bool = False) -> str:
    """For people: the probes (runs of probes that went the same way, or one line each), the
    count per node, lost probes and switches."""
    base = result.started or 0.0
    every = f" every {format_duration(result.interval)}" if result.interval else ""
    lines = [
        f"trace {result.run:08x}: {result.src} -> {result.dst}:{result.port}/{result.protocol}, "
        f"{len(result.probes)} probes{every}, watching {', '.join(result.via)}"
    ]
    rows: list[tuple[str, ...]] = []
    if per_probe:
        rows.append(("PROBE", "SENT", "NODE", "INTERFACE", "RECEIVED"))
        for probe in result.probes:
            node, interface = _where(probe)
            received = _offset(probe.reached.time, base) if probe.reached else "-"
            rows.append((f"#{probe.number}", _offset(probe.sent, base), node, interface, received))
    else:
        rows.append(("PROBES", "SENT", "NODE", "INTERFACE"))
        for run in _runs(result):
            first, last = run[0], run[-1]
            numbers = f"#{first.number}" + (f"-#{last.number}" if len(run) > 1 else "")
            sent = _offset(first.sent, base) + (f"..{_offset(last.sent, base)}" if len(run) > 1 else "")
            rows.append((numbers, sent, *_where(first)))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines += [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    counts = [f"{node}: {count}" for node, count in result.counts.items()]
    counts.append(f"lost: {len(result.lost)}")
    if result.unsent:
        counts.append(f"not sent: {len(result.unsent)}")
    lines.append("  ".join(counts))
    if result.lost:
        lines.append("lost probes: " + ", ".join(f"#{number}" for number in result.lost))
    for switch in result.switches:
        lines.append(
            f"switch {switch.old} -> {switch.new}: {switch.seconds:.3f}s "
            f"(last at {switch.old} #{switch.last_old} {_offset(switch.last_old_time, base)}, "
            f"first at {switch.new} #{switch.first_new} {_offset(switch.first_new_time, base)}, "
            f"{switch.lost} lost between)"
        )
    lines += [f"note: {note}" for note in result.notes]
    return "\n".join(lines)


def _duration(_ctx: click.Context, _param: click.Parameter, value: str) -> float:
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if seconds <= 0:
        raise click.BadParameter("must be more than 0")
    return seconds


@click.command("trace")
@click.argument("lab_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--from", "src", required=True, metavar="NODE", help="The node that sends the probes.")
@click.option("--to", "dst", required=True, metavar="VIP", help="The (IPv4) address probed.")
@click.option("--port", default=80, show_default=True, type=click.IntRange(1, 65535))
@click.option("--protocol", type=click.Choice(["tcp", "udp"]), default="tcp", show_default=True,
              help="TCP SYNs or UDP datagrams.")  # fmt: skip
@click.option("--count", default=10, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--interval", default="100ms", show_default=True, callback=_duration,
              help="Time between probes (500ms, 1s).")  # fmt: skip
@click.option("--via", multiple=True, metavar="NODE",
              help="A node to watch (repeatable) [default: nodes labelled role=edge, else all but --from].")  # fmt: skip
@click.option("--probes", "per_probe", is_flag=True, help="One line per probe (default: runs of probes).")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
def trace(lab_dir: Path, src: str, dst: str, port: int, protocol: str, count: int,
                  interval: float, via: tuple[str, ...], per_probe: bool, output: str) -> None:  # fmt: skip
    """Send tagged probes from a node to a VIP and report which node each one reached."""
    lab = find_lab(lab_dir)
    try:
        result = run_trace(lab, src, dst, port, via, count, interval, protocol=protocol)
    except TraceUnavailable as exc:
        click.echo(str(exc), err=True)
        raise SystemExit(Exit.UNAVAILABLE) from None
    except TraceError as exc:
        click.echo(f"trace failed: {exc}", err=True)
        raise SystemExit(Exit.ERROR) from None
    click.echo(
        json.dumps(result.to_json(), indent=2) if output == "json" else render_trace(result, per_probe)
    )
