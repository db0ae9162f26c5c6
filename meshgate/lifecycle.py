"""Long-lived work owned by components: one task started once, cancelled and awaited on stop;
and running a component until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Coroutine
from typing import Any, Protocol


class OwnedTask:
    """The one background task of a component."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._task: asyncio.Task[Any] | None = None

    def start(self, work: Coroutine[Any, Any, Any]) -> None:
        if self._task is not None:
            work.close()
            raise RuntimeError(f"{self._name} already started")
        self._task = asyncio.create_task(work, name=self._name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class Stoppable(Protocol):
    async def stop(self) -> None: ...


async def until_signal(*also: asyncio.Event) -> None:
    """Wait for SIGTERM or SIGINT (or any of ``also`` being set)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    waiters = [asyncio.create_task(e.wait()) for e in (stop, *also)]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
