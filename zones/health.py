"""Active health checks of a local proxy's instances: a TCP connect, or an HTTP GET of a path
answered 2xx/3xx, every ``interval``; an instance changes state after ``rise`` successes or
``fall`` failures in a row. Its first answer decides its starting state."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from meshgate.lifecycle import OwnedTask
from zones.config import HealthCheck, Instance

log = logging.getLogger(__name__)


@dataclass
class HealthState:
    """One instance's state machine: no I/O, fed one probe result at a time."""

    rise: int
    fall: int
    healthy: bool | None = None  # None until the first probe
    _streak: int = 0

    def observe(self, ok: bool) -> bool:
        """Record a probe result; True when the state changed."""
        if self.healthy is None:
            self.healthy, self._streak = ok, 0
            return True
        if ok == self.healthy:
            self._streak = 0
            return False
        self._streak += 1
        if self._streak >= (self.rise if ok else self.fall):
            self.healthy, self._streak = ok, 0
            return True
        return False


async def probe(instance: Instance, check: HealthCheck) -> bool:
    try:
        async with asyncio.timeout(check.timeout):
            reader, writer = await asyncio.open_connection(instance.address, instance.port)
            try:
                if check.type == "tcp":
                    return True
                writer.write(
                    f"GET {check.path} HTTP/1.1\r\nHost: {instance.address}:{instance.port}\r\n"
                    "User-Agent: meshgate-health\r\nConnection: close\r\n\r\n".encode()
                )
                status_line = await reader.readline()
                parts = status_line.split(b" ", 2)
                return len(parts) >= 2 and parts[0].startswith(b"HTTP/1.") and parts[1][:1] in (b"2", b"3")
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
    except (OSError, TimeoutError):
        return False


class HealthChecker:
    def __init__(
        self,
        instances: tuple[Instance, ...],
        check: HealthCheck,
        on_change: Callable[[dict[Instance, bool]], None],
    ) -> None:
        self.check = check
        self.states = {i: HealthState(check.rise, check.fall) for i in instances}
        self._on_change = on_change
        self._task = OwnedTask("health-checks")
        self.first_round = asyncio.Event()

    def healthy(self) -> dict[Instance, bool]:
        return {i: bool(s.healthy) for i, s in self.states.items()}

    async def start(self) -> None:
        self._task.start(self._run())

    async def stop(self) -> None:
        await self._task.stop()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_round = loop.time()
        while True:
            # A fixed rate, not a pause after each round: a probe that takes long does not
            # stretch the interval (detection stays within fall x interval).
            next_round += self.check.interval
            results = await asyncio.gather(*(probe(i, self.check) for i in self.states))
            changed = [i for i, ok in zip(self.states, results, strict=True) if self.states[i].observe(ok)]
            for instance in changed:
                state = "healthy" if self.states[instance].healthy else "unhealthy"
                log.info("instance %s:%d is %s", instance.address, instance.port, state)
            if changed:
                self._on_change(self.healthy())
            self.first_round.set()
            now = loop.time()
            if next_round < now:  # a round took longer than the interval: start again from now
                next_round = now
            await asyncio.sleep(next_round - now)
