"""A store's synced resources, mirrored in memory and kept current by one watch.

Every sync session of a process reads this one cache through a filtered view and is told
which keys changed; nobody else reads the store for sync.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from meshgate.resources.model import Resource
from meshgate.resources.views import sync_document
from meshgate.store.errors import StoreError
from meshgate.store.interface import EventType, Store
from meshgate.sync.source import Entry
from meshgate.sync.versions import content_version, key_of

log = logging.getLogger(__name__)

Listener = Callable[[set[str]], None]


@dataclass(frozen=True, slots=True)
class Cached:
    resource: Resource
    entry: Entry


class SyncCache:
    """Resources of ``kinds`` in ``store``, as sync entries, with change notifications."""

    def __init__(self, store: Store, kinds: Iterable[str]) -> None:
        self._store = store
        self._kinds = frozenset(kinds)
        self._items: dict[str, Cached] = {}
        self._listeners: set[Listener] = set()
        self._task: asyncio.Task[None] | None = None
        self._loaded = asyncio.Event()
        self.version = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sync-cache")
        await self._loaded.wait()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.add(listener)
        return lambda: self._listeners.discard(listener)

    def get(self, key: str) -> Cached | None:
        return self._items.get(key)

    def items(self) -> Iterable[tuple[str, Cached]]:
        return self._items.items()

    def __len__(self) -> int:
        return len(self._items)

    async def _run(self) -> None:
        backoff = 0.2
        while True:
            try:
                await self._reload()
                backoff = 0.2
                async for event in self._store.watch(from_revision=self.version, kinds=self._kinds):
                    key = key_of(*event.resource.key)
                    if event.type is EventType.DELETED:
                        self._items.pop(key, None)
                    else:
                        self._items[key] = _cached(event.resource)
                    self.version = event.revision
                    self._notify({key})
            except StoreError as exc:  # unavailable or compacted: load again from scratch
                log.warning("sync cache: %s; reloading in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    async def _reload(self) -> None:
        listing = await self._store.list()
        fresh = {key_of(*r.key): _cached(r) for r in listing.items if r.kind in self._kinds}
        changed = {
            k for k in set(fresh) | set(self._items) if _version(fresh.get(k)) != _version(self._items.get(k))
        }
        self._items = fresh
        self.version = listing.revision
        self._loaded.set()
        if changed:
            self._notify(changed)

    def _notify(self, keys: set[str]) -> None:
        for listener in list(self._listeners):
            listener(keys)


class CacheView:
    """What one sink may see of a cache: the resources ``visible`` lets through."""

    def __init__(self, cache: SyncCache, visible: Callable[[Resource], bool]) -> None:
        self._cache = cache
        self._visible = visible

    @property
    def version(self) -> int:
        return self._cache.version

    def entry(self, key: str) -> Entry | None:
        cached = self._cache.get(key)
        if cached is None or not self._visible(cached.resource):
            return None
        return cached.entry

    def keys(self) -> Iterable[str]:
        return [k for k, c in self._cache.items() if self._visible(c.resource)]


def _cached(resource: Resource) -> Cached:
    doc = sync_document(resource)
    return Cached(resource, Entry(content_version(doc), doc, len(json.dumps(doc))))


def _version(cached: Cached | None) -> str | None:
    return None if cached is None else cached.entry.version
