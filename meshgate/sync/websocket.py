"""Sync over an aiohttp WebSocket (client or server side alike): the control planes' channel."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Protocol

import aiohttp

from meshgate.sync import messages
from meshgate.sync.messages import Hello, ProtocolError
from meshgate.sync.runner import Closed
from meshgate.sync.runner import run_sink as _run_sink
from meshgate.sync.runner import run_source as _run_source
from meshgate.sync.sink import SinkSession
from meshgate.sync.source import Delivered, SourceSession

POLICY_VIOLATION = 1008

__all__ = ["Closed", "Socket", "WebSocketChannel", "refuse", "run_sink", "run_source"]


class Socket(Protocol):
    """What aiohttp's server and client WebSockets both offer."""

    async def send_str(self, data: str, compress: int | None = None) -> None: ...

    async def receive(self, timeout: float | None = None) -> aiohttp.WSMessage: ...

    async def close(self, *, code: int = 1000, message: bytes = b"") -> bool: ...

    @property
    def closed(self) -> bool: ...


class WebSocketChannel:
    def __init__(self, ws: Socket) -> None:
        self.ws = ws

    async def send(self, text: str) -> None:
        try:
            await self.ws.send_str(text)
        except (ConnectionError, aiohttp.ClientError) as exc:
            raise Closed(str(exc)) from None

    async def receive(self) -> str:
        frame = await self.ws.receive()
        if frame.type == aiohttp.WSMsgType.TEXT:
            text: str = frame.data
            return text
        if frame.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
            raise Closed(f"closed by peer ({frame.data}: {frame.extra or ''})")
        if frame.type == aiohttp.WSMsgType.ERROR:
            raise Closed(f"connection error: {frame.data}")
        raise ProtocolError(f"unexpected {frame.type.name} frame")

    async def refuse(self, reason: str) -> None:
        await refuse(self.ws, reason)


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
    await _run_source(WebSocketChannel(ws), session, wake, on_delivered, on_nack, on_sent)


async def run_sink(ws: Socket, session: SinkSession, hello: Hello) -> None:
    await _run_sink(WebSocketChannel(ws), session, hello)
