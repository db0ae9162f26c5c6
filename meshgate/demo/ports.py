"""Free ports on this machine, found by binding, so two demos (or other jobs) do not collide.

Ports the demo hands to its processes are taken below the kernel's ephemeral range: a port found
free there is never given to an outgoing connection in the moment before its process binds it.
Processes that can pick their own port (the control planes) get port 0 and report it instead.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Iterable
from pathlib import Path

EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST = 10_000


def _ephemeral_low() -> int:
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def bindable(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
        return True


class PortPicker:
    """Hands out distinct free ports on ``host``, never the same one twice."""

    def __init__(self, host: str = "127.0.0.1", rng: random.Random | None = None) -> None:
        self.host = host
        self.rng = rng or random.Random()  # noqa: S311 - spreads ports, guards nothing
        self.taken: set[int] = set()
        high = _ephemeral_low()
        self.low, self.high = (LOWEST, high) if high - LOWEST > 2000 else (1024, high)

    def _free(self, port: int) -> bool:
        return port not in self.taken and self.low <= port < 65536 and bindable(self.host, port)

    def port(self) -> int:
        return self.offset([0])

    def offset(self, ports: Iterable[int]) -> int:
        """An N such that every ``p + N`` of ``ports`` is free (ports 0: N itself is)."""
        wanted = sorted(set(ports))
        span = wanted[-1] - wanted[0]
        for _ in range(10_000):
            base = self.rng.randrange(self.low, self.high - span)
            n = base - wanted[0]
            if all(self._free(p + n) for p in wanted):
                self.taken.update(p + n for p in wanted)
                return n
        raise OSError(f"no free ports on {self.host} between {self.low} and {self.high}")
