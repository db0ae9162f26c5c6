"""Every connected proxy's configuration stream.

A proxy's configuration is recomputed (debounced) whenever the zone's store changes; only the
documents whose content changed are marked for sending, so a health flip in one service sends
one cluster to the proxies that use it.

Proxies whose configuration is the same (every local proxy, every ingress, each edge by name:
``ProxyIdentity.config_key``) share one view: it is generated, encoded and hashed once per
recompute whatever the number of proxies, and a document whose content did not change keeps
its entry (no encoding, no hashing). Each state of a view is an immutable mapping
(``SnapshotView``): a proxy's stream that acknowledged it keeps a reference to it, not a copy.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from meshgate.clock import Clock
from meshgate.heap_trim import trim_heap
from meshgate.lifecycle import OwnedTask
from meshgate.store.mirror import Change, StoreMirror
from meshgate.sync.runner import Channel, Closed, run_source
from meshgate.sync.source import Delivered, Entry, SourceSession
from meshgate.sync.versions import content_version
from zone_cp.metrics import ZoneMetrics
from zone_cp.proxies import configgen

log = logging.getLogger(__name__)

INPUTS = frozenset({
    "Mesh", "MeshCA", "Service", "Zone", "Dataplane", "CrossZoneEndpoints",
    "Edge", "GlobalService", "Secret",  # what edges are sent
})  # fmt: skip


@dataclass(frozen=True)
class ProxyIdentity:
    role: str  # "local", "ingress" or "edge"
    spiffe_id: str
    service: str | None = None  # for local proxies
    name: str | None = None  # for ingresses and edges

    @property
    def config_key(self) -> tuple[str, str | None]:
        """What ``generate`` depends on besides the state: proxies with the same key get the
        same configuration."""
        return (self.role, self.name if self.role == "edge" else None)

    def generate(self, state: configgen.ZoneState) -> dict[str, configgen.Doc]:
        role, name = self.config_key
        if role == "ingress":
            return configgen.ingress(state)
        if role == "edge":
            assert name is not None
            return configgen.edge(state, name)
        return configgen.local_proxy(state)


class ProxyView:
    """The current documents of the proxies of one ``config_key``, as sync entries. A change
    makes a new mapping (``snapshot``); a mapping once made is never changed."""

    def __init__(self) -> None:
        self.version = 0
        self._entries: dict[str, Entry] = {}

    def entry(self, key: str) -> Entry | None:
        return self._entries.get(key)

    def keys(self) -> Iterable[str]:
        return list(self._entries)

    def snapshot(self) -> Mapping[str, Entry]:
        return self._entries

    def replace(self, docs: dict[str, configgen.Doc], version: int) -> set[str]:
        """Install ``docs``; return the keys whose content changed (or went away). An entry
        whose content is unchanged is kept as it was, so a new entry means a new version."""
        previous = self._entries
        fresh = {}
        changed = set()
        for key, doc in docs.items():
            old = previous.get(key)
            if old is not None and old.doc == doc:
                fresh[key] = old
                continue
            version_of = content_version(doc)
            if old is not None and old.version == version_of:
                fresh[key] = old
                continue
            text = json.dumps(doc, separators=(",", ":"))
            fresh[key] = Entry(version_of, doc, len(text), text)
            changed.add(key)
        changed.update(previous.keys() - fresh.keys())
        if changed:  # unchanged, the streams that share the current mapping keep sharing it
            self._entries = fresh
        self.version = version
        return changed


@dataclass(eq=False)  # sessions are kept in a set, by identity
class _Session:
    identity: ProxyIdentity
    source: SourceSession
    wake: asyncio.Event


@dataclass(eq=False)
class _Group:
    """The connected proxies of one ``config_key`` and the view they share."""

    identity: ProxyIdentity  # the first one's: its config_key is everyone's
    view: ProxyView
    sessions: set[_Session] = field(default_factory=set)


@dataclass
class ProxyHub:
    zone: str
    mirror: StoreMirror
    clock: Clock
    metrics: ZoneMetrics
    debounce: float = 0.02
    #: An acknowledged update of this many documents was a snapshot: what it took to send is
    #: garbage now, whose pages ``release_memory`` hands back (``heap_trim``) rather than keep
    #: them among the connections' memory.
    trim_after_changes: int = 1000
    release_memory: Callable[[], object] = trim_heap
    _groups: dict[tuple[str, str | None], _Group] = field(default_factory=dict)
    _dirty: asyncio.Event = field(default_factory=asyncio.Event)
    _task: OwnedTask = field(default_factory=lambda: OwnedTask("proxy-config"))
    _unsubscribe: Callable[[], None] | None = None
    # Configuration versions start from the wall clock in milliseconds, so that they keep
    # growing across zone CP restarts (a proxy's config_version never goes backwards).
    _generation: int = field(default_factory=lambda: int(time.time() * 1000))

    @property
    def connected(self) -> int:
        return sum(len(group.sessions) for group in self._groups.values())

    async def start(self) -> None:
        self._unsubscribe = self.mirror.subscribe(self._changed)
        self._task.start(self._run())

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        await self._task.stop()

    def _changed(self, changes: list[Change]) -> None:
        if any(kind in INPUTS for (kind, _name), _r in changes):
            self._dirty.set()

    def _state(self) -> configgen.ZoneState:
        return configgen.ZoneState.of(self.zone, self.mirror.resources.values())

    async def _run(self) -> None:
        while True:
            await self._dirty.wait()
            await asyncio.sleep(self.debounce)  # a burst of store changes makes one recompute
            self._dirty.clear()
            self._generation += 1
            state = self._state()
            for group in list(self._groups.values()):
                changed = group.view.replace(group.identity.generate(state), self._generation)
                if changed:
                    for session in group.sessions:
                        session.source.mark_dirty(changed)
                        session.wake.set()

    def _join(self, identity: ProxyIdentity) -> _Group:
        group = self._groups.get(identity.config_key)
        if group is None:
            view = ProxyView()
            view.replace(identity.generate(self._state()), self._generation)
            group = self._groups[identity.config_key] = _Group(identity, view)
        return group

    def _leave(self, group: _Group, session: _Session) -> None:
        group.sessions.discard(session)
        key = group.identity.config_key
        if not group.sessions and self._groups.get(key) is group:
            del self._groups[key]  # the next one to connect starts from the current state

    async def serve(self, channel: Channel, identity: ProxyIdentity, on_change: Callable[[], None]) -> None:
        group = self._join(identity)
        session = _Session(identity, SourceSession(group.view, self.clock.monotonic), asyncio.Event())
        group.sessions.add(session)
        self.metrics.proxies.set(self.connected)
        on_change()

        def delivered(d: Delivered) -> None:
            self.metrics.updates.labels("zone-to-proxy", "acked").inc()
            if d.changes >= self.trim_after_changes:
                self.release_memory()

        def nacked(nack: object) -> None:
            self.metrics.updates.labels("zone-to-proxy", "nacked").inc()
            log.warning("proxy %s rejected its configuration: %s", identity.spiffe_id, nack)

        try:
            await run_source(channel, session.source, session.wake, delivered, nacked)
        except Closed as exc:
            log.info("proxy %s disconnected: %s", identity.spiffe_id, exc)
        finally:
            self._leave(group, session)
            self.metrics.proxies.set(self.connected)
            on_change()
