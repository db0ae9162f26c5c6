"""asyncio helpers that stay correct under cancellation.

Python 3.11's ``asyncio.wait_for`` can swallow a cancellation that arrives as the awaited
thing completes, leaving a task that was told to stop running forever. ``asyncio.timeout``
does not have that race: every long-lived loop waits through these helpers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def wait_event(event: asyncio.Event, timeout: float | None) -> bool:
    """Wait for ``event`` at most ``timeout`` seconds (None: forever); True if it was set."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def within(awaitable: Awaitable[T], timeout: float | None) -> T:
    """``awaitable``'s result, or TimeoutError after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        return await awaitable
