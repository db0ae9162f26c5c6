"""The demo's live status: zones (sync, last sync, proxies and instances healthy) from the global
CP's API, and per edge the zone that served a request through it just now and the RTT it probes
to each zone (its admin ``/status``). Rendered as rich tables on a terminal, as lines otherwise."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from meshgate.demo.client import EdgeAnswer
from meshgate.demo.run import DemoMesh

UNANSWERED = (aiohttp.ClientError, OSError, TimeoutError, ValueError, KeyError)


@dataclass(frozen=True)
class ZoneRow:
    name: str
    region: str
    connected: bool | None  # None: never connected
    last_sync: str  # the age of the zone's last ACK
    lag: str
    proxies: int
    healthy: int
    instances: int
    ingresses: int


@dataclass(frozen=True)
class EdgeRow:
    name: str
    zone: str
    url: str
    answer: EdgeAnswer
    rtt: dict[str, str]  # zone -> probed RTT ("1.2 ms", "unreachable", "ejected")


@dataclass(frozen=True)
class Status:
    at: datetime
    running: int
    total: int
    exited: list[str] = field(default_factory=list)
    zones: list[ZoneRow] = field(default_factory=list)
    zones_error: str = ""
    edges: list[EdgeRow] = field(default_factory=list)


def _age(stamp: str | None, now: datetime) -> str:
    if not stamp:
        return "never"
    seconds = int((now - datetime.fromisoformat(stamp.replace("Z", "+00:00"))).total_seconds())
    return f"{max(seconds, 0)}s ago" if seconds < 120 else f"{seconds // 60}m ago"


def _zone_row(doc: dict[str, Any], now: datetime) -> ZoneRow:
    status = doc.get("status") or {}
    sync = status.get("sync") or {}
    inventory = status.get("inventory") or {}
    return ZoneRow(
        doc["metadata"]["name"], str(doc.get("spec", {}).get("region", "")),
        sync.get("connected") if sync else None, _age(sync.get("ackedAt"), now), str(sync.get("lag") or "-"),
        int(inventory.get("dataplanes", 0)), int(inventory.get("healthyInstances", 0)),
        int(inventory.get("instances", 0)), int(inventory.get("ingresses", 0)),
    )  # fmt: skip


def _rtt(zones: list[dict[str, Any]]) -> dict[str, str]:
    out = {}
    for z in zones:
        if z.get("ejected"):
            out[z["zone"]] = "ejected"
        elif not z.get("reachable") or z.get("rttMs") is None:
            out[z["zone"]] = "unreachable"
        else:
            out[z["zone"]] = f"{z['rttMs']:.1f} ms"
    return out


async def _edge_row(mesh: DemoMesh, index: int) -> EdgeRow:
    edge = mesh.plan.edges[index]
    url = mesh.urls(edge)[0]
    answer = await mesh.client.through_edge(url)
    mesh.answers[edge.name] = answer
    rtt: dict[str, str] = {}
    try:
        status, body = await mesh.client.call("GET", f"http://{mesh.plan.host}:{edge.admin_port}/status", "")
        if status == 200 and isinstance(body, dict):
            rtt = _rtt(body.get("zones") or [])
    except UNANSWERED:
        pass  # an edge not answering shows no RTTs
    return EdgeRow(edge.name, edge.zone, url, answer, rtt)


async def _zones(mesh: DemoMesh, now: datetime) -> tuple[list[ZoneRow], str]:
    try:
        code, body = await mesh.client.call("GET", f"{mesh.global_url}/api/v1/zones", mesh.admin_token)
        if code != 200:
            return [], f"global CP answered {code}"
        return [_zone_row(doc, now) for doc in body["items"]], ""
    except UNANSWERED as exc:  # shown; the next refresh tries again
        return [], f"global CP not answering ({exc or type(exc).__name__})"


async def collect(mesh: DemoMesh) -> Status:
    now = datetime.now(UTC)
    exited = [f"{c.name} (exit status {c.returncode})" for c in mesh.components if c.returncode is not None]
    edges = asyncio.gather(*(_edge_row(mesh, i) for i in range(len(mesh.plan.edges))))
    (zones, error), rows = await asyncio.gather(_zones(mesh, now), edges)  # cancelled together
    return Status(now, len(mesh.components) - len(exited), len(mesh.components), exited, zones, error, rows)


# -- rendering -------------------------------------------------------------------------------------


def _local(row: ZoneRow) -> int:
    return max(row.proxies - row.ingresses, 0)  # its Dataplanes: the local proxies and the ingresses


def _sync(row: ZoneRow) -> str:
    return "never connected" if row.connected is None else "connected" if row.connected else "disconnected"


def _answer(answer: EdgeAnswer) -> str:
    if answer.error:
        return f"no answer ({answer.error})"
    if not answer.zone:
        return f"{answer.status} (no zone)"
    return f"{answer.status} from {answer.zone} ({answer.workload or 'no workload'}) in {answer.ms:.1f} ms"


def _rtts(row: EdgeRow) -> str:
    return ", ".join(f"{zone} {rtt}" for zone, rtt in row.rtt.items()) or "-"


def _processes(status: Status) -> str:
    line = f"{status.running}/{status.total} processes running"
    return line + (f"; exited: {', '.join(status.exited)}" if status.exited else "")


def plain(status: Status) -> list[str]:
    lines = [f"status at {status.at.astimezone().strftime('%H:%M:%S')}: {_processes(status)}"]
    if status.zones_error:
        lines.append(f"  zones: {status.zones_error}")
    for z in status.zones:
        lines.append(
            f"  zone {z.name} ({z.region}): sync {_sync(z)}, last sync {z.last_sync}, lag {z.lag}; "
            f"{_local(z)} local proxies, {z.healthy}/{z.instances} instances healthy, {z.ingresses} ingress"
        )
    for e in status.edges:
        lines.append(f"  edge {e.name} ({e.zone}): {_answer(e.answer)}; probed RTT {_rtts(e)}")
    return lines


def rich(status: Status) -> RenderableType:
    """Two tables that fit 80 columns (the URLs are printed above them)."""
    zones = Table(title="zones", title_justify="left", box=None, header_style="bold")
    for header in ("ZONE", "REGION", "SYNC", "LAST SYNC", "LAG", "PROXIES", "HEALTHY", "INGRESS"):
        zones.add_column(header, no_wrap=True)
    for z in status.zones:
        sync = Text(_sync(z), style="green" if z.connected else "red")
        all_healthy = z.instances > 0 and z.healthy == z.instances
        healthy = Text(f"{z.healthy}/{z.instances}", style="green" if all_healthy else "yellow")
        zones.add_row(z.name, z.region, sync, z.last_sync, z.lag, str(_local(z)), healthy, str(z.ingresses))
    measured = sorted({zone for e in status.edges for zone in e.rtt})
    edges = Table(
        title="edges: a request now, the RTTs they probe", title_justify="left", box=None, header_style="bold"
    )
    for header in ("EDGE", "ANSWER", "ZONE", "WORKLOAD", *(f"RTT {zone}" for zone in measured)):
        edges.add_column(header, no_wrap=True)
    for e in status.edges:
        a = e.answer
        style = "green" if a.served and a.zone == e.zone else "yellow" if a.served else "red"
        answer = Text(f"{a.status} {a.ms:.1f} ms" if not a.error else "no answer", style=style)
        edges.add_row(
            e.name, answer, a.zone or "-", a.workload or "-", *(e.rtt.get(zone, "-") for zone in measured)
        )
    footer = Text(
        f"{_processes(status)} · {status.at.astimezone().strftime('%H:%M:%S')} · Ctrl-C stops everything",
        style="dim",
    )
    parts: list[RenderableType] = [zones]
    if status.zones_error:
        parts.append(Text(status.zones_error, style="red"))
    errors = [Text(f"{e.name}: {e.answer.error}", style="red") for e in status.edges if e.answer.error]
    return Group(*parts, Text(""), edges, *errors, Text(""), footer)
