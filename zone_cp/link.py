"""The zone CP's two streams to the global CP, each reconnecting on its own.

global→zone: this side is the sink (it says what it holds, then applies updates).
zone→global: this side is the source (what the zone reports, from its own store).
Reconnects use jittered exponential backoff; a rejected connection (403) backs off too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from meshgate.clock import Clock, rfc3339
from meshgate.resources.kinds import REGISTRY
from meshgate.resources.kinds.system import SyncCheckpointSpec
from meshgate.resources.model import Resource
from meshgate.resources.registry import SyncDirection
from meshgate.store.errors import StoreError
from meshgate.store.interface import Store
from meshgate.store.mirror import StoreMirror
from meshgate.sync.backoff import Backoff
from meshgate.sync.cache import CacheView, SyncCache
from meshgate.sync.messages import MAX_MESSAGE_BYTES, Hello, Nack, ProtocolError
from meshgate.sync.sink import SinkSession
from meshgate.sync.source import SourceSession
from meshgate.sync.websocket import Closed, run_sink, run_source
from zone_cp.applier import GlobalApplier, known_state
from zone_cp.config import ZoneCPConfig
from zone_cp.identity import ZoneIdentity
from zone_cp.metrics import ZoneMetrics

log = logging.getLogger(__name__)

CONTACT = ("SyncCheckpoint", "global-contact")
CONTACT_INTERVAL = 15.0


def contact_record(version: int, clock: Clock) -> Resource:
    return Resource(*CONTACT, SyncCheckpointSpec(version=version, applied_at=rfc3339(clock.now())))


@dataclass
class StreamState:
    connected: bool = False
    since: float | None = None  # monotonic: connected or disconnected since
    attempts: int = 0
    last_error: str = ""
    lost_at: float | None = None  # monotonic: when an established connection last dropped


@dataclass
class LinkState:
    to_zone: StreamState = field(default_factory=StreamState)
    from_zone: StreamState = field(default_factory=StreamState)
    applied_version: int = 0
    last_nack: str = ""  # our own last refusal of a global update
    last_nack_at: float | None = None


class GlobalLink:
    def __init__(
        self,
        config: ZoneCPConfig,
        store: Store,
        mirror: StoreMirror,
        identity: ZoneIdentity,
        clock: Clock,
        metrics: ZoneMetrics,
        state: LinkState,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self._config, self._store, self._identity = config, store, identity
        self._clock, self._metrics, self._on_change = clock, metrics, on_change
        self.state = state
        self._mirror = mirror
        self._cache = SyncCache(mirror, [d.kind for d in REGISTRY.syncing(SyncDirection.ZONE_TO_GLOBAL)])
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        _known, self.state.applied_version = known_state(self._mirror)
        await self._cache.start()
        self._session = aiohttp.ClientSession()
        now = self._clock.monotonic()
        self.state.to_zone.since = self.state.from_zone.since = now
        self._tasks = [
            asyncio.create_task(self._keep(self.state.to_zone, "global-to-zone", self._sink), name="to-zone"),
            asyncio.create_task(
                self._keep(self.state.from_zone, "zone-to-global", self._source), name="from-zone"
            ),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._cache.stop()
        if self._session is not None:
            await self._session.close()

    async def _keep(
        self,
        state: StreamState,
        stream: str,
        serve: Callable[[aiohttp.ClientWebSocketResponse], Coroutine[Any, Any, None]],
    ) -> None:
        backoff = Backoff(self._config.reconnect_initial, self._config.reconnect_max)
        url = f"{self._config.global_url.rstrip('/')}/sync/v1/{stream}"
        while True:
            state.attempts += 1
            try:
                assert self._session is not None
                if self._identity.renew_if_due(self._clock.now(), self._config.cert_ttl):
                    log.info("renewed the zone CP's client certificate")
                async with self._session.ws_connect(
                    url,
                    ssl=self._identity.client_ssl(),
                    heartbeat=self._config.heartbeat,
                    max_msg_size=MAX_MESSAGE_BYTES,
                    timeout=aiohttp.ClientWSTimeout(ws_close=5),
                ) as ws:
                    self._connected(state, stream, True)
                    backoff.reset()
                    await serve(ws)
            except (Closed, aiohttp.ClientError, OSError, TimeoutError, ProtocolError) as exc:
                state.last_error = str(exc) or type(exc).__name__
                level = logging.INFO if state.connected else logging.DEBUG
                log.log(level, "%s stream: %s", stream, state.last_error)
            finally:
                if state.connected:
                    self._connected(state, stream, False)
            await asyncio.sleep(backoff.next())

    def _connected(self, state: StreamState, stream: str, up: bool) -> None:
        state.connected = up
        state.since = self._clock.monotonic()
        if not up:
            state.lost_at = state.since
        self._metrics.connected.labels(stream).set(1 if up else 0)
        log.info("%s stream %s", stream, "connected" if up else "disconnected")
        self._on_change()

    async def _sink(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        applier = GlobalApplier(self._store, self._clock, self._applied)
        session = SinkSession(self._answered(applier.apply))
        known, applied = known_state(self._mirror)
        contact = asyncio.create_task(self._record_contact(), name="global-contact")
        try:
            await run_sink(ws, session, Hello(known, applied))
        finally:
            contact.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await contact
            with contextlib.suppress(StoreError):
                await self._store.put(contact_record(self.state.applied_version, self._clock))

    async def _record_contact(self) -> None:
        """While connected, note every ``CONTACT_INTERVAL`` that the global CP's word is current,
        so after a restart without it the zone can say how old its cross-zone view is."""
        while True:
            with contextlib.suppress(StoreError):
                await self._store.put(contact_record(self.state.applied_version, self._clock))
            await asyncio.sleep(CONTACT_INTERVAL)

    def _answered(
        self, apply: Callable[[Any], Coroutine[Any, Any, None]]
    ) -> Callable[[Any], Coroutine[Any, Any, None]]:
        async def wrapped(change: Any) -> None:
            try:
                await apply(change)
            except Exception as exc:
                self._metrics.updates.labels("global-to-zone", "nacked").inc()
                self.state.last_nack = str(exc)
                self.state.last_nack_at = self._clock.monotonic()
                log.warning("rejected an update from the global CP: %s", exc)
                self._on_change()
                raise
            self._metrics.updates.labels("global-to-zone", "applied").inc()

        return wrapped

    def _applied(self, version: int) -> None:
        self.state.applied_version = version
        self._metrics.applied_version.set(version)
        self._on_change()

    async def _source(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        session = SourceSession(CacheView(self._cache, lambda _r: True), self._clock.monotonic)
        wake = asyncio.Event()

        def changed(keys: set[str]) -> None:
            session.mark_dirty(keys)
            wake.set()

        def nacked(nack: Nack) -> None:
            self._metrics.updates.labels("zone-to-global", "nacked").inc()
            log.warning("the global CP rejected our report: %s %s", nack.error, list(nack.details)[:5])

        unsubscribe = self._cache.subscribe(changed)
        try:
            await run_source(
                ws,
                session,
                wake,
                lambda _d: self._metrics.updates.labels("zone-to-global", "acked").inc(),
                nacked,
            )
        finally:
            unsubscribe()
