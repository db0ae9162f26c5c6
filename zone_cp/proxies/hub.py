"""Every connected proxy's configuration stream.

A proxy's configuration is recomputed (debounced) whenever the zone's store changes; only the
documents whose content changed are marked for sending, so a health flip in one service sends
one cluster to the proxies that use it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from meshgate.clock import Clock
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

    def generate(self, state: configgen.ZoneState) -> dict[str, configgen.Doc]:
        if self.role == "ingress":
            return configgen.ingress(state)
        if self.role == "edge":
            assert self.name is not None
            return configgen.edge(state, self.name)
        return configgen.local_proxy(state)


class ProxyView:
    """A proxy's current documents, as sync entries."""

    def __init__(self) -> None:
        self.version = 0
        self._entries: dict[str, Entry] = {}

    def entry(self, key: str) -> Entry | None:
        return self._entries.get(key)

    def keys(self) -> Iterable[str]:
        return list(self._entries)

    def replace(self, docs: dict[str, configgen.Doc], version: int) -> set[str]:
        """Install ``docs``; return the keys whose content changed (or went away)."""
        fresh = {}
        for key, doc in docs.items():
            old = self._entries.get(key)
            text = json.dumps(doc, separators=(",", ":"))
            version_of = content_version(doc)
            fresh[key] = (
                old
                if old is not None and old.version == version_of
                else Entry(version_of, doc, len(text), text)
            )
        changed = {
            k
            for k in set(fresh) | set(self._entries)
            if (fresh.get(k) or _NONE).version != (self._entries.get(k) or _NONE).version
        }
        self._entries, self.version = fresh, version
        return changed


_NONE = Entry("", {}, 0)


@dataclass(eq=False)  # sessions are kept in a set, by identity
class _Session:
    identity: ProxyIdentity
    view: ProxyView
    source: SourceSession
    wake: asyncio.Event


@dataclass
class ProxyHub:
    zone: str
    mirror: StoreMirror
    clock: Clock
    metrics: ZoneMetrics
    debounce: float = 0.02
    _sessions: set[_Session] = field(default_factory=set)
    _dirty: asyncio.Event = field(default_factory=asyncio.Event)
    _task: OwnedTask = field(default_factory=lambda: OwnedTask("proxy-config"))
    _unsubscribe: Callable[[], None] | None = None
    # Configuration versions start from the wall clock in milliseconds, so that they keep
    # growing across zone CP restarts (a proxy's config_version never goes backwards).
    _generation: int = field(default_factory=lambda: int(time.time() * 1000))

    @property
    def connected(self) -> int:
        return len(self._sessions)

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
            for session in list(self._sessions):
                changed = session.view.replace(session.identity.generate(state), self._generation)
                if changed:
                    session.source.mark_dirty(changed)
                    session.wake.set()

    async def serve(self, channel: Channel, identity: ProxyIdentity, on_change: Callable[[], None]) -> None:
        view = ProxyView()
        view.replace(identity.generate(self._state()), self._generation)
        session = _Session(identity, view, SourceSession(view, self.clock.monotonic), asyncio.Event())
        self._sessions.add(session)
        self.metrics.proxies.set(len(self._sessions))
        on_change()

        def delivered(_d: Delivered) -> None:
            self.metrics.updates.labels("zone-to-proxy", "acked").inc()

        def nacked(nack: object) -> None:
            self.metrics.updates.labels("zone-to-proxy", "nacked").inc()
            log.warning("proxy %s rejected its configuration: %s", identity.spiffe_id, nack)

        try:
            await run_source(channel, session.source, session.wake, delivered, nacked)
        except Closed as exc:
            log.info("proxy %s disconnected: %s", identity.spiffe_id, exc)
        finally:
            self._sessions.discard(session)
            self.metrics.proxies.set(len(self._sessions))
            on_change()
