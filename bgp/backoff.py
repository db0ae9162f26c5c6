"""Jittered exponential backoff between restarts of a process, reset once it ran long enough."""

from __future__ import annotations

import random


class Backoff:
    def __init__(
        self,
        *,
        initial: float = 0.5,
        cap: float = 30.0,
        stable_after: float = 60.0,
        rng: random.Random | None = None,
    ) -> None:
        if initial <= 0 or cap < initial:
            raise ValueError("backoff needs 0 < initial <= cap")
        self._initial = initial
        self._cap = cap
        self._stable_after = stable_after
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not a secret
        self._attempt = 0

    def next_delay(self, ran_for: float) -> float:
        """Seconds to wait before the next start, given how long the last run lasted: between
        half and all of ``initial * 2**n`` (capped), n counting failures since a stable run."""
        if ran_for >= self._stable_after:
            self._attempt = 0
        ceiling = min(self._cap, self._initial * float(2 ** min(self._attempt, 32)))
        self._attempt += 1
        return ceiling * self._rng.uniform(0.5, 1.0)
