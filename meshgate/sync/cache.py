"""A store's synced resources as sync entries (document, version, encoded text), kept current
from a ``StoreMirror``: every sync session of a process reads this one cache through a
filtered view and is told which keys changed."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from meshgate.resources.model import Resource
from meshgate.resources.views import sync_document
from meshgate.store.mirror import Change, StoreMirror
from meshgate.sync.source import Entry
from meshgate.sync.versions import content_version, key_of

Listener = Callable[[set[str]], None]


@dataclass(frozen=True, slots=True)
class Cached:
    resource: Resource
    entry: Entry


class SyncCache:
    """The resources of ``kinds`` in ``mirror``, with change notifications by key."""

    def __init__(self, mirror: StoreMirror, kinds: Iterable[str]) -> None:
        self._mirror = mirror
        self._kinds = frozenset(kinds)
        self._items: dict[str, Cached] = {}
        self._listeners: set[Listener] = set()
        self._unsubscribe: Callable[[], None] | None = None

    @property
    def version(self) -> int:
        return self._mirror.revision

    async def start(self) -> None:
        self._items = {key_of(*r.key): _cached(r) for r in self._mirror.of_kinds(self._kinds)}
        self._unsubscribe = self._mirror.subscribe(self._changed)

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.add(listener)
        return lambda: self._listeners.discard(listener)

    def get(self, key: str) -> Cached | None:
        return self._items.get(key)

    def items(self) -> Iterable[tuple[str, Cached]]:
        return self._items.items()

    def __len__(self) -> int:
        return len(self._items)

    def _changed(self, changes: list[Change]) -> None:
        keys = set()
        for (kind, name), resource in changes:
            if kind not in self._kinds:
                continue
            key = key_of(kind, name)
            if resource is None:
                self._items.pop(key, None)
            else:
                self._items[key] = _cached(resource)
            keys.add(key)
        if keys:
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
    text = json.dumps(doc, separators=(",", ":"))
    return Cached(resource, Entry(content_version(doc), doc, len(text), text))
