"""Every resource of a store in memory, kept current by one watch.

Validation reads it instead of the store (an operator write is then checked against the
mirror's snapshot and committed with a compare-and-swap on the write fence, so a mirror that
lags only costs a retry, never a wrong commit); sync caches are built on it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from meshgate.aio import wait_event
from meshgate.lifecycle import OwnedTask
from meshgate.resources.model import Resource
from meshgate.store.errors import StoreError
from meshgate.store.interface import EventType, Store

log = logging.getLogger(__name__)

Key = tuple[str, str]
Change = tuple[Key, Resource | None]  # None: deleted
Listener = Callable[[list[Change]], None]


class StoreMirror:
    def __init__(self, store: Store) -> None:
        self._store = store
        self.resources: dict[Key, Resource] = {}
        self.revision = 0
        self._listeners: set[Listener] = set()
        self._task = OwnedTask("store-mirror")
        self._loaded = asyncio.Event()
        self._moved = asyncio.Event()

    async def start(self) -> None:
        self._task.start(self._run())
        await self._loaded.wait()

    async def stop(self) -> None:
        await self._task.stop()

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.add(listener)
        return lambda: self._listeners.discard(listener)

    def of_kinds(self, kinds: Iterable[str]) -> list[Resource]:
        wanted = frozenset(kinds)
        return [r for r in self.resources.values() if r.kind in wanted]

    async def caught_up(self, revision: int, timeout: float = 5.0) -> bool:
        """Wait until the mirror has seen ``revision`` (True), or ``timeout`` passed (False)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.revision < revision:
            moved = self._moved
            if not await wait_event(moved, deadline - loop.time()):
                return self.revision >= revision
        return True

    async def _run(self) -> None:
        backoff = 0.2
        while True:
            try:
                await self._reload()
                backoff = 0.2
                async for event in self._store.watch(from_revision=self.revision):
                    key = event.resource.key
                    if event.type is EventType.DELETED:
                        self.resources.pop(key, None)
                        change: Change = (key, None)
                    else:
                        self.resources[key] = event.resource
                        change = (key, event.resource)
                    self.revision = event.revision
                    self._notify([change])
            except StoreError as exc:  # unavailable or compacted: load again from scratch
                log.warning("store mirror: %s; reloading in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    async def _reload(self) -> None:
        listing = await self._store.list()
        fresh = {r.key: r for r in listing.items}
        changes: list[Change] = [(k, fresh.get(k)) for k in set(fresh) | set(self.resources)
                                 if fresh.get(k) != self.resources.get(k)]  # fmt: skip
        self.resources = fresh
        self.revision = listing.revision
        self._loaded.set()
        if changes:
            self._notify(changes)
        else:
            self._wake()

    def _wake(self) -> None:
        """Wake whoever waits in ``caught_up``; the next waiter gets a fresh event (one left set
        would make ``caught_up`` loop without ever yielding to the watch it waits for)."""
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()

    def _notify(self, changes: list[Change]) -> None:
        self._wake()
        for listener in list(self._listeners):
            listener(changes)
