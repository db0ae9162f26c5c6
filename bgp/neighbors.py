"""Per-neighbor session state from ExaBGP's events, and its Prometheus lines (pure).

A session counts as established only after ExaBGP said ``up`` and until it says anything else
(or stops): ``connected`` is a connection attempt, not a session.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from bgp.events import NeighborChange, Notification
from bgp.settings import Neighbor

SessionState = Literal["idle", "connect", "established", "down"]

_STATES: dict[str, SessionState] = {"connected": "connect", "up": "established", "down": "down"}


@dataclass
class NeighborStatus:
    address: str
    peer_asn: int
    description: str
    state: SessionState
    since: float
    flaps: int = 0  # times it left established
    reason: str = ""  # why it is not established, when known
    last_notification: str = ""


class NeighborTable:
    def __init__(self, neighbors: Iterable[Neighbor], now: float) -> None:
        self._table = {
            n.address: NeighborStatus(n.address, n.peer_asn, n.description, "idle", now, reason="not started")
            for n in neighbors
        }

    def __iter__(self) -> Iterator[NeighborStatus]:
        return iter(self._table.values())

    def __len__(self) -> int:
        return len(self._table)

    def get(self, address: str) -> NeighborStatus | None:
        return self._table.get(address)

    def established(self) -> list[str]:
        return [n.address for n in self._table.values() if n.state == "established"]

    def apply(self, event: NeighborChange | Notification, now: float) -> bool:
        """Fold in one event; True if a session's state changed."""
        status = self._table.get(event.peer)
        if status is None:
            return False
        if isinstance(event, Notification):
            verb = "sent" if event.direction == "send" else "received"
            text = f"notification {verb} ({event.code},{event.subcode})"
            status.last_notification = f"{text} {event.message}".strip()
            return False
        state = _STATES[event.state]
        if state == "established":
            reason = ""
        elif state == "connect":
            # a connection attempt: while it retries, keep saying why it went down
            reason = status.reason if status.state in ("connect", "down") else "connecting"
        else:
            reason = event.reason or "down"
        return self._set(status, state, reason, now)

    def all_down(self, reason: str, now: float) -> bool:
        """Every session is gone (the speaker stopped); True if any state changed."""
        changed = False
        for status in self._table.values():
            changed |= self._set(status, "down", reason, now)
        return changed

    @staticmethod
    def _set(status: NeighborStatus, state: SessionState, reason: str, now: float) -> bool:
        changed = state != status.state
        if changed:
            if status.state == "established":
                status.flaps += 1
            status.state = state
            status.since = now
        status.reason = reason
        return changed


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def metric_lines(
    table: NeighborTable, *, speaker_up: bool, restarts: int, announced_routes: int
) -> list[str]:
    """Prometheus text-format lines (HELP, TYPE, samples) for the edge admin's /metrics."""
    lines = [
        "# HELP meshgate_bgp_speaker_up 1 while ExaBGP runs and its API helper is connected.",
        "# TYPE meshgate_bgp_speaker_up gauge",
        f"meshgate_bgp_speaker_up {int(speaker_up)}",
        "# HELP meshgate_bgp_speaker_restarts_total Times ExaBGP was restarted after it stopped or lost its helper.",
        "# TYPE meshgate_bgp_speaker_restarts_total counter",
        f"meshgate_bgp_speaker_restarts_total {restarts}",
        "# HELP meshgate_bgp_announced_routes Routes ExaBGP acknowledged announcing (sent on every established session).",
        "# TYPE meshgate_bgp_announced_routes gauge",
        f"meshgate_bgp_announced_routes {announced_routes}",
        "# HELP meshgate_bgp_neighbor_up 1 while the BGP session with the neighbor is established.",
        "# TYPE meshgate_bgp_neighbor_up gauge",
    ]
    labels = {n.address: f'neighbor="{_label(n.address)}",peer_asn="{n.peer_asn}"' for n in table}
    lines += [
        f"meshgate_bgp_neighbor_up{{{labels[n.address]}}} {int(n.state == 'established')}" for n in table
    ]
    lines += [
        "# HELP meshgate_bgp_neighbor_flaps_total Times the session left the established state.",
        "# TYPE meshgate_bgp_neighbor_flaps_total counter",
    ]
    lines += [f"meshgate_bgp_neighbor_flaps_total{{{labels[n.address]}}} {n.flaps}" for n in table]
    return lines
