"""Plain counters and gauges of the proxy engine, labelled by listener or cluster name.

No metrics library here (the proxy process must stay lean): each listener and each cluster owns a
small mutable dataclass that the data path increments in place; the process exports
``Stats.snapshot()`` however it likes. Counters only grow; gauges (``active``, ``ejected``) go up
and down.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from meshgate.proxy.http.metrics import HttpStats


@dataclass(slots=True, eq=False)
class ListenerStats:
    """One listener: accepted (downstream) connections and the bytes relayed for them."""

    #: TCP connections accepted (counter)
    accepted: int = 0
    #: connections open now, TLS handshakes in progress included (gauge)
    active: int = 0
    #: TLS handshakes that failed or timed out (counter)
    tls_handshake_failures: int = 0
    #: TLS handshakes that completed but whose peer identity was refused (counter)
    peer_rejected: int = 0
    #: bytes received from downstream clients (counter)
    bytes_in: int = 0
    #: bytes sent to downstream clients (counter)
    bytes_out: int = 0
    #: finished relays by close reason (counters)
    close_reasons: dict[str, int] = field(default_factory=dict)
    #: connections refused before any byte was relayed, by reason (counters)
    refused: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True, eq=False)
class ClusterStats:
    """One upstream cluster: connection attempts, their failures, ejections, bytes."""

    #: upstream connection attempts (counter)
    connect_attempts: int = 0
    #: failed attempts of every kind, the ones below included (counter)
    connect_failures: int = 0
    #: attempts that ran out of time (counter)
    connect_timeouts: int = 0
    #: attempts whose TLS handshake failed for another reason than the server's identity (counter)
    tls_failures: int = 0
    #: attempts refused because of the server's certificate or SPIFFE ID (counter)
    identity_failures: int = 0
    #: upstream connections open now (gauge)
    active: int = 0
    #: bytes sent to upstream endpoints (counter)
    bytes_sent: int = 0
    #: bytes received from upstream endpoints (counter)
    bytes_received: int = 0
    #: passive ejections (counter)
    ejections: int = 0
    #: ejections not done because of the max-ejection-percentage guard (counter)
    ejections_suppressed: int = 0
    #: endpoints ejected now (gauge)
    ejected: int = 0


Snapshot = dict[str, int | dict[str, int]]


def _snapshot(stats: ListenerStats | ClusterStats) -> Snapshot:
    out: Snapshot = {}
    for f in fields(stats):
        value = getattr(stats, f.name)
        out[f.name] = dict(value) if isinstance(value, dict) else int(value)
    return out


class Stats:
    """Every listener's and cluster's stats, by name (created on first use)."""

    __slots__ = ("clusters", "http", "listeners")

    def __init__(self) -> None:
        self.listeners: dict[str, ListenerStats] = {}
        self.clusters: dict[str, ClusterStats] = {}
        #: HTTP golden metrics by (direction, service): ("inbound", own service), ("outbound", callee)
        self.http: dict[tuple[str, str], HttpStats] = {}

    def http_stats(self, direction: str, service: str) -> HttpStats:
        stats = self.http.get((direction, service))
        if stats is None:
            stats = self.http[(direction, service)] = HttpStats()
        return stats

    def listener(self, name: str) -> ListenerStats:
        stats = self.listeners.get(name)
        if stats is None:
            stats = self.listeners[name] = ListenerStats()
        return stats

    def cluster(self, name: str) -> ClusterStats:
        stats = self.clusters.get(name)
        if stats is None:
            stats = self.clusters[name] = ClusterStats()
        return stats

    def snapshot(self) -> dict[str, dict[str, Snapshot]]:
        """A copy: ``{"listeners": {name: {counter: value}}, "clusters": {...}}``."""
        return {
            "listeners": {name: _snapshot(s) for name, s in self.listeners.items()},
            "clusters": {name: _snapshot(s) for name, s in self.clusters.items()},
        }


def count_reason(stats: ListenerStats, reason: str) -> None:
    stats.close_reasons[reason] = stats.close_reasons.get(reason, 0) + 1


def count_refusal(stats: ListenerStats, reason: str) -> None:
    stats.refused[reason] = stats.refused.get(reason, 0) + 1
