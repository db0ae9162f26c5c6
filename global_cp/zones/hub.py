"""Every zone's two sync streams, served from one cache of the global store.

global→zone: a source session per connected zone over a filtered view of the cache (what
its kinds declare the zone should receive). zone→global: a sink per zone writing its reports.
At most ``initial_slots`` zones take their first (full) sync at once, so a global CP
restart does not have every zone pull a snapshot in the same second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from global_cp.metrics import Metrics
from global_cp.zones.inventory import InventoryApplier, known_inventory
from global_cp.zones.session_status import SessionStatus
from meshgate.clock import Clock
from meshgate.resources.kinds import REGISTRY
from meshgate.resources.model import Resource
from meshgate.resources.registry import SyncDirection
from meshgate.store.interface import Store
from meshgate.store.mirror import StoreMirror
from meshgate.sync.cache import CacheView, SyncCache
from meshgate.sync.messages import Hello, Update
from meshgate.sync.sink import SinkSession
from meshgate.sync.source import Delivered, SourceSession
from meshgate.sync.websocket import Closed, Socket, run_sink, run_source

log = logging.getLogger(__name__)

TO_ZONE = "global-to-zone"
FROM_ZONE = "zone-to-global"


def visible_to(zone: str) -> Callable[[Resource], bool]:
    def visible(resource: Resource) -> bool:
        targets = REGISTRY[resource.kind].target_zones(resource.spec)
        return targets is None or zone in targets

    return visible


@dataclass
class SyncHub:
    store: Store
    mirror: StoreMirror
    clock: Clock
    metrics: Metrics
    replica: str
    initial_slots: int = 4
    cache: SyncCache = field(init=False)
    _slots: asyncio.Semaphore = field(init=False)
    _streams: dict[tuple[str, str], Socket] = field(default_factory=dict)

    def __post_init__(self) -> None:
        kinds = [d.kind for d in REGISTRY.syncing(SyncDirection.GLOBAL_TO_ZONE)]
        self.cache = SyncCache(self.mirror, kinds)
        self._slots = asyncio.Semaphore(self.initial_slots)

    async def start(self) -> None:
        await self.cache.start()

    async def stop(self) -> None:
        for ws in list(self._streams.values()):
            with contextlib.suppress(Exception):
                await ws.close(code=1001, message=b"global CP stopping")
        await self.cache.stop()

    def connected(self, stream: str) -> list[str]:
        return sorted(zone for zone, s in self._streams if s == stream)

    async def _claim(self, zone: str, stream: str, ws: Socket) -> None:
        """One stream of each direction per zone: a newer connection replaces an older one."""
        old = self._streams.get((zone, stream))
        self._streams[(zone, stream)] = ws
        if old is not None:
            with contextlib.suppress(Exception):
                await old.close(code=1000, message=b"replaced by a newer connection of this zone")

    def _release(self, zone: str, stream: str, ws: Socket) -> None:
        if self._streams.get((zone, stream)) is ws:
            del self._streams[(zone, stream)]
        self.metrics.zones_connected.labels(stream).set(len(self.connected(stream)))

    async def serve_to_zone(self, ws: Socket, zone: str) -> None:
        await self._claim(zone, TO_ZONE, ws)
        self.metrics.zones_connected.labels(TO_ZONE).set(len(self.connected(TO_ZONE)))
        session = SourceSession(CacheView(self.cache, visible_to(zone)), self.clock.monotonic)
        wake, kick = asyncio.Event(), asyncio.Event()
        status = SessionStatus(self.store, zone, self.replica, self.clock)

        def changed(keys: set[str]) -> None:
            session.mark_dirty(keys)
            wake.set()

        slot = asyncio.Event()
        await self._slots.acquire()  # released by the first acknowledged update

        def delivered(d: Delivered) -> None:
            if not slot.is_set():
                slot.set()
                self._slots.release()
            self.metrics.sync_updates.labels(TO_ZONE, "acked").inc()
            for latency in d.latencies:
                self.metrics.propagation.observe(latency)
            kick.set()

        def nacked(_nack: object) -> None:
            self.metrics.sync_updates.labels(TO_ZONE, "nacked").inc()
            log.warning("zone %s rejected an update: %s", zone, session.stats.last_nack)
            kick.set()

        unsubscribe = self.cache.subscribe(changed)
        writer = asyncio.create_task(status.run(session, kick), name=f"zone-status-{zone}")
        try:
            await run_source(ws, session, wake, delivered, nacked, lambda u: self._sent(zone, u))
        except Closed as exc:
            log.info("zone %s: global→zone stream closed: %s", zone, exc)
        finally:
            if not slot.is_set():
                self._slots.release()
            unsubscribe()
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            self._release(zone, TO_ZONE, ws)
            if (zone, TO_ZONE) not in self._streams:  # not replaced by a newer connection
                await status.disconnected(session)

    def _sent(self, zone: str, update: Update) -> None:
        self.metrics.sync_updates.labels(TO_ZONE, "sent").inc(update.final)
        self.metrics.resources_sent.labels(TO_ZONE, zone).inc(len(update.upserts) + len(update.removals))

    async def serve_from_zone(self, ws: Socket, zone: str) -> None:
        await self._claim(zone, FROM_ZONE, ws)
        self.metrics.zones_connected.labels(FROM_ZONE).set(len(self.connected(FROM_ZONE)))
        applier = InventoryApplier(self.store, self.mirror, zone, self.metrics)
        try:
            hello = Hello(known_inventory(self.mirror, zone), 0)
            await run_sink(ws, SinkSession(applier.apply), hello)
        except Closed as exc:
            log.info("zone %s: zone→global stream closed: %s", zone, exc)
        finally:
            self._release(zone, FROM_ZONE, ws)
