"""Running sync sessions over any channel that carries whole text messages.

A channel is three coroutines: send a message, receive the next one (raising ``Closed`` when
the peer is gone), refuse (close for a protocol violation, with the reason). ``websocket.py``
adapts aiohttp WebSockets; ``frames.py`` adapts a plain (TLS) stream with length prefixes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from meshgate.aio import wait_event
from meshgate.sync import messages
from meshgate.sync.messages import Hello, ProtocolError
from meshgate.sync.sink import SinkSession
from meshgate.sync.source import Delivered, SourceSession


class Closed(Exception):
    """The connection ended (the peer closed it, or it broke)."""


class Channel(Protocol):
    async def send(self, text: str) -> None: ...

    async def receive(self) -> str: ...

    async def refuse(self, reason: str) -> None: ...


async def _receive(channel: Channel) -> tuple[messages.Message, int]:
    text = await channel.receive()
    return messages.decode(text), len(text)


async def run_source(
    channel: Channel,
    session: SourceSession,
    wake: asyncio.Event,
    on_delivered: Callable[[Delivered], None] = lambda _d: None,
    on_nack: Callable[[messages.Nack], None] = lambda _n: None,
    on_sent: Callable[[messages.Update], None] = lambda _u: None,
) -> None:
    """Serve ``session`` until the connection ends. ``wake`` is set when keys turn dirty.

    Raises Closed when the peer goes away and ProtocolError (after refusing) when it misbehaves.
    """

    def handle(message: messages.Message) -> None:
        delivered = session.on_message(message)
        if delivered is not None:
            on_delivered(delivered)
        if isinstance(message, messages.Nack):
            on_nack(message)
        wake.set()

    async def reader() -> None:
        # Nothing received or sent stays referenced while the next message is awaited: the
        # acknowledgement of a snapshot carries a latency per resource (10,000 resources: 320 KB
        # per stream), an update's last part its documents.
        while True:
            handle((await _receive(channel))[0])

    async def send(updates: list[messages.Update]) -> None:
        for update in updates:
            await channel.send(messages.encode(update))
            on_sent(update)

    async def writer() -> None:
        while True:
            retry = session.next_retry()
            await wait_event(wake, None if retry is None else max(0.0, retry - session.now()))
            wake.clear()
            await send(session.poll())

    await both(channel, reader(), writer())


async def run_sink(channel: Channel, session: SinkSession, hello: Hello) -> None:
    """Send ``hello``, then apply updates and answer each, until the connection ends."""

    async def loop() -> None:
        await channel.send(messages.encode(hello))
        while True:
            await _answer(channel, session)

    await both(channel, loop())


async def _answer(channel: Channel, session: SinkSession) -> None:
    """Receive one message, apply it and answer it. Its own frame, so that the update (a
    snapshot's last part holds thousands of documents) is not kept while the next is awaited."""
    message, size = await _receive(channel)
    answer = await session.on_message(message, size)
    if answer is not None:
        await channel.send(messages.encode(answer))


async def both(channel: Channel, *coros: Coroutine[Any, Any, None]) -> None:
    """Run ``coros`` until one ends; a protocol violation refuses the peer, a lost peer is Closed."""
    try:
        async with asyncio.TaskGroup() as group:
            for coro in coros:
                group.create_task(coro)
    except* ProtocolError as errors:
        reason = str(errors.exceptions[0])
        await channel.refuse(reason)
        raise errors.exceptions[0] from None
    except* (Closed, ConnectionError) as errors:
        raise Closed(str(errors.exceptions[0])) from None
