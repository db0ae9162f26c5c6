"""Locality-aware failover order (a pure function).

``priority_groups(local_zone, local, remote, distances)`` orders where traffic should go:

1. the healthy endpoints of the local zone, if there is at least one;
2. then, zone by zone from the nearest (``distances[zone]``, ties broken by zone name), the
   healthy endpoints of every remote zone (e.g. its ingresses) that has at least one;
3. zones without a known distance come last, by name.

Zones with no healthy endpoint are left out, so the first group is always where traffic goes now
and the next ones are the failover order. ``remote`` entries for the local zone itself are
ignored (local traffic goes to local endpoints, not to the local zone's ingresses). Health is the
caller's: pass ``healthy`` (a predicate), or filter the inputs beforehand.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PriorityGroup(Generic[T]):
    zone: str
    #: 0 for the local zone, ``math.inf`` for a zone of unknown distance
    distance: float
    endpoints: tuple[T, ...]
    #: True for the local zone's group
    local: bool = False


def _all_healthy(_: object) -> bool:
    return True


def priority_groups(
    local_zone: str,
    local: Sequence[T],
    remote: Mapping[str, Sequence[T]],
    distances: Mapping[str, float],
    *,
    healthy: Callable[[T], bool] = _all_healthy,
) -> list[PriorityGroup[T]]:
    """The priority groups, best first (see the module doc)."""
    groups: list[PriorityGroup[T]] = []
    local_healthy = tuple(e for e in local if healthy(e))
    if local_healthy:
        groups.append(PriorityGroup(local_zone, 0.0, local_healthy, local=True))
    ranked: list[tuple[float, str, tuple[T, ...]]] = []
    for zone, endpoints in remote.items():
        if zone == local_zone:
            continue
        distance = distances.get(zone, math.inf)
        if math.isnan(distance) or distance < 0:
            raise ValueError(f"distance to zone {zone!r} must be a non-negative number, got {distance}")
        alive = tuple(e for e in endpoints if healthy(e))
        if alive:
            ranked.append((distance, zone, alive))
    ranked.sort(key=lambda item: (item[0], item[1]))
    groups.extend(PriorityGroup(zone, distance, alive) for distance, zone, alive in ranked)
    return groups
