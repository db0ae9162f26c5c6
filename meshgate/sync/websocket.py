"""Running a sync session over an aiohttp WebSocket (client or server side alike)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

import aiohttp

from meshgate.aio import wait_event
from meshgate.sync import messages
from meshgate.sync.messages import Hello, ProtocolError
from meshgate.sync.sink import SinkSession
from meshgate.sync.source import Delivered, SourceSession

log = logging.getLogger(__name__)

POLICY_VIOLATION = 1008


class Socket(Protocol):
    """What aiohttp's server and client WebSockets both offer."""

    async def send_str(self, data: str, compress: int | None = None) -> None: ...

    async def receive(self, timeout: float | None = None) -> aiohttp.WSMessage: ...

    async def close(self, *, code: int = 1000, message: bytes = b"") -> bool: ...

    @property
    def closed(self) -> bool: ...


class Closed(Exception):
    """The connection ended (the peer closed it, or it broke)."""


async def _receive(ws: Socket) -> tuple[messages.Message, int]:
    frame = await ws.receive()
    if frame.type == aiohttp.WSMsgType.TEXT:
        text: str = frame.data
        return messages.decode(text), len(text)
    if frame.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
        raise Closed(f"closed by peer ({frame.data}: {frame.extra or ''})")
    if frame.type == aiohttp.WSMsgType.ERROR:
        raise Closed(f"connection error: {frame.data}")
    raise ProtocolError(f"unexpected {frame.type.name} frame")


async def refuse(ws: Socket, reason: str) -> None:
    """Close for a protocol violation, with the reason (clipped to what a close frame holds)."""
    with contextlib.suppress(Exception):
        await ws.close(code=POLICY_VIOLATION, message=reason.encode()[:120])


async def run_source(
    ws: Socket,
    session: SourceSession,
    wake: asyncio.Event,
    on_delivered: Callable[[Delivered], None] = lambda _d: None,
    on_nack: Callable[[messages.Nack], None] = lambda _n: None,
    on_sent: Callable[[messages.Update], None] = lambda _u: None,
) -> None:
    """Serve ``session`` until the connection ends. ``wake`` is set when keys turn dirty.

    Raises Closed when the peer goes away and ProtocolError (after closing) when it misbehaves.
    """

    async def reader() -> None:
        while True:
            message, _size = await _receive(ws)
            delivered = session.on_message(message)
            if delivered is not None:
                on_delivered(delivered)
            if isinstance(message, messages.Nack):
                on_nack(message)
            wake.set()

    async def writer() -> None:
        while True:
            retry = session.next_retry()
            timeout = None if retry is None else max(0.0, retry - session.now())
            await wait_event(wake, timeout)
            wake.clear()
            for update in session.poll():
                await ws.send_str(messages.encode(update))
                on_sent(update)

    await _both(ws, reader(), writer())


async def run_sink(ws: Socket, session: SinkSession, hello: Hello) -> None:
    """Send ``hello``, then apply updates and answer each, until the connection ends."""

    async def loop() -> None:
        await ws.send_str(messages.encode(hello))
        while True:
            message, size = await _receive(ws)
            answer = await session.on_message(message, size)
            if answer is not None:
                await ws.send_str(messages.encode(answer))

    await _both(ws, loop())


async def _both(ws: Socket, *coros: object) -> None:
    try:
        async with asyncio.TaskGroup() as group:
            for coro in coros:
                group.create_task(coro)  # type: ignore[arg-type]
    except* ProtocolError as errors:
        reason = str(errors.exceptions[0])
        await refuse(ws, reason)
        raise errors.exceptions[0] from None
    except* (Closed, ConnectionError, aiohttp.ClientError) as errors:
        raise Closed(str(errors.exceptions[0])) from None
