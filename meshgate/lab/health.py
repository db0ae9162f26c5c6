"""docker's healthcheck state machine, without I/O: the caller runs probes when told and reports
their outcome with the time (an injected clock; tests feed it numbers).

- ``starting`` until a probe succeeds (``healthy``) or ``retries`` probes in a row fail once the
  start period is over (``unhealthy``); a failure during the start period does not count, unless
  a probe already succeeded. A success makes the node healthy again at any time.
- Probes run every ``interval`` seconds; during the start period every ``start interval``
  (docker's ``start-interval``, not in containerlab's schema): here the smaller of ``interval``
  and half a second, so that labs become ready soon after their services do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from meshgate.lab.model import Healthcheck

START_INTERVAL: Final = 0.5
OUTPUT_LIMIT: Final = 2000
HealthStatus = Literal["starting", "healthy", "unhealthy"]


@dataclass
class HealthMonitor:
    check: Healthcheck
    started: float
    status: HealthStatus = "starting"
    failing_streak: int = 0
    probes: int = 0
    succeeded_once: bool = False
    last_output: str = ""
    last_probe: float | None = None

    def in_start_period(self, now: float) -> bool:
        return not self.succeeded_once and now < self.started + self.check.start_period

    def next_probe(self) -> float:
        """When the next probe is due."""
        since = self.started if self.last_probe is None else self.last_probe
        if self.in_start_period(since):
            return since + min(self.check.interval, START_INTERVAL)
        return since + self.check.interval

    def record(self, ok: bool, output: str, now: float) -> HealthStatus:
        self.probes += 1
        self.last_probe = now
        self.last_output = output[-OUTPUT_LIMIT:]
        if ok:
            self.succeeded_once = True
            self.failing_streak = 0
            self.status = "healthy"
        elif not self.in_start_period(now):
            self.failing_streak += 1
            if self.failing_streak >= self.check.retries:
                self.status = "unhealthy"
        return self.status

    def restart(self, now: float) -> None:
        """The node's process started again: a new start period, status starting."""
        self.started = now
        self.status = "starting"
        self.failing_streak = 0
        self.succeeded_once = False
        self.last_probe = None

    def count_from_here(self) -> None:
        """Forget earlier failures (the node was just configured: its exec commands ran)."""
        if self.status != "healthy":
            self.status = "starting"
        self.failing_streak = 0
