"""Which zone serves a global service's next request, from what the edge measured. No I/O.

``ZoneBook`` keeps, per (service, zone): the smoothed RTT of the probes to the zone's ingresses,
whether the last probe round reached it, and its consecutive failures (probes, and requests that
failed to connect or were answered 502/503). After ``eject_after`` failures in a row the zone is
ejected: no request goes there until a probe reaches it again ("probed back").

``ZoneChooser.order`` ranks the zones that can serve (healthy instances, an ingress, not
ejected): the lowest ``priority`` first; within one priority the nearest by RTT, where RTTs within
``tie`` seconds (or 10 %) of each other count as equal and the GlobalService's own order decides;
a zone never measured sorts after measured ones, by distance (geography is only the fallback).
The nearest zone keeps its place until another is faster by more than ``hysteresis`` (a
fraction), so two zones at similar distances do not flap. When the zones of the first priority
carry weights, ``pick_first`` spreads requests among them by weight instead.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from edge.runtime import GlobalService, ServingZone

RTT_SMOOTHING = 0.3  # weight of the newest probe in the moving average
NEAR_TIE_FRACTION = 0.1


@dataclass
class ZoneHealth:
    rtt: float | None = None  # seconds, smoothed
    reachable: bool = False  # the last probe round reached an ingress (and the service behind it)
    probed: bool = False  # at least one probe round finished
    failures: int = 0  # consecutive failures, probes and requests
    ejected: bool = False
    ejections: int = 0
    last_error: str = ""


class ZoneBook:
    def __init__(self, eject_after: int = 3) -> None:
        self.eject_after = eject_after
        self.zones: dict[tuple[str, str], ZoneHealth] = {}

    def get(self, service: str, zone: str) -> ZoneHealth:
        key = (service, zone)
        health = self.zones.get(key)
        if health is None:
            health = self.zones[key] = ZoneHealth()
        return health

    def probed(self, service: str, zone: str, rtt: float | None, error: str = "") -> None:
        """One probe round of the zone's ingresses: ``rtt`` of the best one, None: none answered."""
        health = self.get(service, zone)
        health.probed = True
        if rtt is None:
            health.reachable = False
            health.last_error = error
            self._failed(health)
            return
        health.reachable = True
        health.failures = 0
        health.ejected = False  # probed back
        health.rtt = rtt if health.rtt is None else (1 - RTT_SMOOTHING) * health.rtt + RTT_SMOOTHING * rtt

    def request_failed(self, service: str, zone: str) -> None:
        self._failed(self.get(service, zone))

    def request_succeeded(self, service: str, zone: str) -> None:
        health = self.zones.get((service, zone))
        if health is not None and not health.ejected:
            health.failures = 0

    def _failed(self, health: ZoneHealth) -> None:
        health.failures += 1
        if health.failures >= self.eject_after and not health.ejected:
            health.ejected = True
            health.ejections += 1

    def forget(self, keep: set[tuple[str, str]]) -> None:
        for key in set(self.zones) - keep:
            del self.zones[key]


def usable(zone: ServingZone, health: ZoneHealth | None) -> bool:
    return zone.healthy > 0 and bool(zone.endpoints) and not (health is not None and health.ejected)


class ZoneChooser:
    def __init__(self, book: ZoneBook, *, hysteresis: float = 0.2, tie: float = 0.002) -> None:
        self.book = book
        self.hysteresis = hysteresis
        self.tie = tie
        self._leaders: dict[str, str] = {}  # service -> the zone currently nearest

    def order(self, service: GlobalService) -> list[ServingZone]:
        """The zones to try, in order (empty: none can serve)."""
        index = {z.zone: i for i, z in enumerate(service.zones)}
        health = {z.zone: self.book.zones.get((service.name, z.zone)) for z in service.zones}
        candidates = [z for z in service.zones if usable(z, health[z.zone])]
        if not candidates:
            return []

        def rtt(z: ServingZone) -> float | None:
            h = health[z.zone]
            return h.rtt if h is not None and h.reachable else None

        ranked: list[ServingZone] = []
        for priority in sorted({z.priority for z in candidates}):
            level = [z for z in candidates if z.priority == priority]
            measured = sorted((z for z in level if rtt(z) is not None), key=lambda z: (rtt(z), index[z.zone]))
            # Near-ties: each group starts at its fastest zone and takes every zone within `tie`
            # (or 10 %) of it; the GlobalService's order decides inside a group. Anchoring at the
            # group's first zone keeps the ranking transitive (no chain of small gaps drifts).
            while measured:
                anchor = rtt(measured[0]) or 0.0
                limit = anchor + max(self.tie, NEAR_TIE_FRACTION * anchor)
                group = [z for z in measured if (rtt(z) or 0.0) <= limit]
                ranked += sorted(group, key=lambda z: index[z.zone])
                measured = measured[len(group) :]
            unmeasured = [z for z in level if rtt(z) is None]
            ranked += sorted(
                unmeasured, key=lambda z: (z.distance if z.distance is not None else math.inf, index[z.zone])
            )
        first = ranked[0]
        leader = self._leaders.get(service.name)
        if leader is not None and leader != first.zone:
            held = next((z for z in ranked if z.zone == leader and z.priority == first.priority), None)
            if held is not None:
                r_new, r_old = rtt(first), rtt(held)
                faster = r_new is not None and r_old is not None and r_new < r_old * (1 - self.hysteresis)
                if r_old is not None and not faster:
                    ranked.remove(held)
                    ranked.insert(0, held)
        self._leaders[service.name] = ranked[0].zone
        return ranked


def pick_first(ranked: Sequence[ServingZone], rng: random.Random | None = None) -> list[ServingZone]:
    """Per request: when the first priority's zones carry weights, one of them chosen by weight
    goes first; otherwise ``ranked`` as it is."""
    if not ranked or ranked[0].weight is None:
        return list(ranked)
    top = [z for z in ranked if z.priority == ranked[0].priority and z.weight is not None]
    if len(top) < 2:
        return list(ranked)
    chosen = (rng or random).choices(top, weights=[z.weight or 1 for z in top])[0]
    return [chosen, *(z for z in ranked if z is not chosen)]
