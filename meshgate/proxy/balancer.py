"""Load balancers: pick one of a cluster's available endpoints.

A balancer sees ``Candidate`` objects (the cluster's per-endpoint state: ``active`` connections and
``weight``) and returns one of them; the cluster has already removed ejected endpoints. Both
balancers take their randomness from an injected ``random.Random`` so tests are reproducible.

- ``RoundRobin``: each candidate in turn, starting at a random offset (so that N worker processes
  do not all begin with the same endpoint). With unequal weights it is the smooth weighted round
  robin of nginx: over ``sum(weights)`` picks each candidate is chosen ``weight`` times, spread out.
- ``LeastRequest``: power of two choices. Two distinct candidates are drawn at random and the one
  with fewer active connections per unit of weight wins (the first drawn on a tie). It avoids
  the herd effect of "always the least loaded" while steering away from loaded endpoints.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Protocol, TypeVar


class Candidate(Protocol):
    @property
    def active(self) -> int: ...

    @property
    def weight(self) -> int: ...


C = TypeVar("C", bound=Candidate)


class Balancer(Protocol):
    def pick(self, candidates: Sequence[C]) -> C | None:
        """One of ``candidates`` (None only when there is none)."""
        ...


class RoundRobin:
    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 - not for security
        self._next: int | None = None
        self._current: dict[int, int] = {}  # id(candidate) -> smooth WRR current weight

    def pick(self, candidates: Sequence[C]) -> C | None:
        count = len(candidates)
        if count == 0:
            return None
        first = candidates[0].weight
        if all(c.weight == first for c in candidates):
            if self._next is None:
                self._next = self._rng.randrange(count)
            chosen = candidates[self._next % count]
            self._next = (self._next + 1) % count
            return chosen
        return self._weighted(candidates)

    def _weighted(self, candidates: Sequence[C]) -> C:
        current = self._current
        if len(current) > 2 * len(candidates):  # forget candidates that left
            alive = {id(c) for c in candidates}
            self._current = current = {k: v for k, v in current.items() if k in alive}
        total = 0
        best: C | None = None
        best_weight = 0
        for candidate in candidates:
            weight = max(candidate.weight, 0)
            total += weight
            value = current.get(id(candidate), 0) + weight
            current[id(candidate)] = value
            if best is None or value > best_weight:
                best, best_weight = candidate, value
        assert best is not None
        current[id(best)] = best_weight - total
        return best


class LeastRequest:
    """Power of two choices over active connection counts (weighted)."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 - not for security

    def pick(self, candidates: Sequence[C]) -> C | None:
        count = len(candidates)
        if count == 0:
            return None
        if count == 1:
            return candidates[0]
        i = self._rng.randrange(count)
        j = self._rng.randrange(count - 1)
        if j >= i:
            j += 1
        a, b = candidates[i], candidates[j]
        # a.active / a.weight <= b.active / b.weight, without division (weights are >= 1)
        return a if a.active * max(b.weight, 1) <= b.active * max(a.weight, 1) else b


def make_balancer(kind: str, rng: random.Random | None = None) -> Balancer:
    """``"round_robin"`` or ``"least_request"``."""
    if kind == "round_robin":
        return RoundRobin(rng)
    if kind == "least_request":
        return LeastRequest(rng)
    raise ValueError(f"unknown balancer {kind!r} (round_robin or least_request)")
