"""A retry budget: retries may add at most a fraction of the requests of a recent window, plus a
small floor, so that a failing upstream group never multiplies the load on the next one
(linkerd's and Envoy's retry budgets follow the same idea)."""

from __future__ import annotations

import time
from collections.abc import Callable


class RetryBudget:
    def __init__(
        self, ratio: float = 0.2, minimum: int = 10, window: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        if not 0.0 <= ratio <= 1.0:
            raise ValueError("ratio must be within 0..1")
        if minimum < 0 or window <= 0:
            raise ValueError("minimum must be >= 0 and window > 0")
        self.ratio, self.minimum, self.window, self.clock = ratio, minimum, window, clock
        # two half-windows: the current one and the one before it
        self._start = clock()
        self._requests = [0, 0]
        self._retries = [0, 0]
        #: retries refused because the budget was spent (counter)
        self.exhausted = 0

    def _roll(self) -> None:
        now = self.clock()
        half = self.window / 2
        if now - self._start >= half:
            elapsed = int((now - self._start) // half)
            if elapsed == 1:
                self._requests = [0, self._requests[0]]
                self._retries = [0, self._retries[0]]
            else:
                self._requests, self._retries = [0, 0], [0, 0]
            self._start += elapsed * half

    def request(self) -> None:
        """Count one request (a retry is not a request)."""
        self._roll()
        self._requests[0] += 1

    def allow(self) -> bool:
        """Whether one more retry fits; if so it is counted."""
        self._roll()
        spent = self._retries[0] + self._retries[1]
        if spent >= self.minimum + self.ratio * (self._requests[0] + self._requests[1]):
            self.exhausted += 1
            return False
        self._retries[0] += 1
        return True
