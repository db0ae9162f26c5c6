"""``GET /api/v1/watch``: every change after a revision, as newline-delimited JSON.

Each line: ``{"type": "ADDED|MODIFIED|DELETED", "revision": "N", "object": {...}}``.
A ``{"type": "HEARTBEAT"}`` line keeps idle streams alive. Resume after a disconnect by
passing the last revision seen as ``fromRevision``; a compacted revision gets 410 (or an
``ERROR`` line if the store reports it after the stream started).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

from aiohttp import web

from global_cp.api.errors import BadRequest
from global_cp.api.state import state_of
from meshgate.aio import within
from meshgate.resources.kinds import REGISTRY
from meshgate.resources.views import api_document
from meshgate.store.interface import WatchEvent

Item = WatchEvent | Exception | None  # None: the store's watch ended


async def watch(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    kinds = _kinds(request.query.get("kinds", ""))
    raw = request.query.get("fromRevision")
    if raw is not None and not raw.isdigit():
        raise BadRequest("fromRevision must be a revision number")
    start = int(raw) if raw is not None else await state.store.revision()
    queue: asyncio.Queue[Item] = asyncio.Queue(maxsize=256)
    pump = asyncio.create_task(_pump(state.store.watch(from_revision=start, kinds=kinds), queue))
    state.metrics.watchers.inc()
    try:
        # A watch that fails at once (compacted history) gets a status code, not a stream.
        item = await _next(queue, 0.1)
        if isinstance(item, Exception):
            raise item
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):  # the client went away: nothing to say
            await _stream(response, queue, item, pump, state.heartbeat)
        return response
    finally:
        state.metrics.watchers.dec()
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump


async def _stream(
    response: web.StreamResponse,
    queue: asyncio.Queue[Item],
    item: Item,
    pump: asyncio.Task[None],
    heartbeat: float,
) -> None:
    while True:
        if isinstance(item, WatchEvent):
            await response.write(_line(item))
        elif isinstance(item, Exception):
            await response.write(json.dumps({"type": "ERROR", "message": str(item)}).encode() + b"\n")
            return
        elif item is None and pump.done():
            return
        else:
            await response.write(b'{"type":"HEARTBEAT"}\n')
        item = await _next(queue, heartbeat)


async def _next(queue: asyncio.Queue[Item], timeout: float) -> Item:
    try:
        return await within(queue.get(), timeout)
    except TimeoutError:
        return None


async def _pump(events: AsyncIterator[WatchEvent], queue: asyncio.Queue[Item]) -> None:
    try:
        async for event in events:
            await queue.put(event)
    except Exception as exc:
        await queue.put(exc)
    finally:
        closer = getattr(events, "aclose", None)
        if closer is not None:
            with contextlib.suppress(Exception):
                await closer()


def _kinds(text: str) -> frozenset[str]:
    exposed = {d.kind for d in REGISTRY.exposed()}
    if not text:
        return frozenset(exposed)
    kinds = set()
    for name in text.split(","):
        descriptor = REGISTRY.resolve(name.strip())
        if descriptor is None or descriptor.kind not in exposed:
            raise BadRequest(f"kinds: unknown kind {name.strip()!r}")
        kinds.add(descriptor.kind)
    return frozenset(kinds)


def _line(event: WatchEvent) -> bytes:
    body = {
        "type": event.type.value,
        "revision": str(event.revision),
        "object": api_document(event.resource),
    }
    return json.dumps(body, separators=(",", ":")).encode() + b"\n"
