"""The runner over an in-memory channel: once an update is applied and acknowledged, nothing of
it stays referenced by either end while the next message is awaited (a snapshot's last part
holds thousands of documents, its acknowledgement a latency per resource)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Iterable
from typing import Any

from meshgate.sync.messages import Hello, Update
from meshgate.sync.runner import Closed, run_sink, run_source
from meshgate.sync.sink import Change, SinkSession
from meshgate.sync.source import Delivered, Entry, SourceSession
from meshgate.sync.versions import content_version


class Pipe:
    """One direction of an in-memory channel."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()


class MemoryChannel:
    def __init__(self, inbound: Pipe, outbound: Pipe) -> None:
        self.inbound, self.outbound = inbound, outbound

    async def send(self, text: str) -> None:
        await self.outbound.queue.put(text)

    async def receive(self) -> str:
        text = await self.inbound.queue.get()
        if text is None:
            raise Closed("closed")
        return text

    async def refuse(self, reason: str) -> None:
        await self.outbound.queue.put(None)


class View:
    def __init__(self, count: int) -> None:
        self.version = 1
        self.entries = {}
        for i in range(count):
            doc = {"kind": "Cluster", "metadata": {"name": f"c{i}"}, "spec": {"service": f"c{i}"}}
            self.entries[f"Cluster/c{i}"] = Entry(content_version(doc), doc, 64)

    def entry(self, key: str) -> Entry | None:
        return self.entries.get(key)

    def keys(self) -> Iterable[str]:
        return list(self.entries)


def alive(kind: type[Any]) -> list[Any]:
    gc.collect()
    return [o for o in gc.get_objects() if isinstance(o, kind)]


async def test_nothing_of_an_acknowledged_update_stays_referenced() -> None:
    to_sink, to_source = Pipe(), Pipe()
    delivered: list[Delivered] = []
    applied: list[int] = []
    acked = asyncio.Event()

    async def apply(change: Change) -> None:
        applied.append(len(change.upserts))

    def on_delivered(d: Delivered) -> None:
        delivered.append(d)
        acked.set()

    source = SourceSession(View(500), time.monotonic)
    tasks = [
        asyncio.create_task(
            run_source(MemoryChannel(to_source, to_sink), source, asyncio.Event(), on_delivered)
        ),
        asyncio.create_task(run_sink(MemoryChannel(to_sink, to_source), SinkSession(apply), Hello({}, 0))),
    ]
    await asyncio.wait_for(acked.wait(), 5)
    for _ in range(5):  # both ends go back to awaiting their next message
        await asyncio.sleep(0)
    try:
        assert applied == [500]
        assert len(delivered[0].latencies) == 500
        assert alive(Update) == []
        assert [d for d in alive(Delivered) if d is not delivered[0]] == []
        assert gc.get_referrers(delivered[0]) == [delivered]
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Closed):
                await task
