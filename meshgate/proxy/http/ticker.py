"""One periodic callback per listener that checks every connection's deadline.

A timer per request (``call_later`` and its cancel) costs more than the request's parsing; the
engine instead keeps one deadline per connection, a float it overwrites at each state change,
and a ``Ticker`` that looks at all of them every ``interval`` seconds. Timeouts are therefore
precise to one interval (0.25 s by default), which is what HTTP timeouts need.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol


class Member(Protocol):
    deadline: float

    def expired(self, now: float) -> None: ...


class Ticker:
    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.members: set[Member] = set()
        #: called on every tick after the deadlines (pool sweeps, access log flushes)
        self.hooks: list[Callable[[float], object]] = []
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def add(self, member: Member) -> None:
        self.members.add(member)
        if self._handle is None:
            self.start()

    def discard(self, member: Member) -> None:
        self.members.discard(member)

    def start(self) -> None:
        if self._handle is None:
            self._loop = asyncio.get_running_loop()
            self._handle = self._loop.call_later(self.interval, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        assert self._loop is not None
        now = time.monotonic()
        try:
            for member in [m for m in self.members if m.deadline <= now]:
                member.expired(now)
            for hook in self.hooks:
                hook(now)
        finally:
            self._handle = self._loop.call_later(self.interval, self._tick)
