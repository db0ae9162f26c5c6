"""The ``ZoneSession`` record of one zone, kept by the replica holding its global→zone stream:
connected or not, what it applied and when, what is pending, its last NACK."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from meshgate.aio import wait_event
from meshgate.clock import Clock, rfc3339
from meshgate.resources.kinds.system import Nack, ZoneSessionSpec
from meshgate.resources.model import Resource
from meshgate.store.errors import NotFound, StoreError
from meshgate.store.interface import Store
from meshgate.sync.source import SourceSession

log = logging.getLogger(__name__)


class SessionStatus:
    def __init__(self, store: Store, zone: str, replica: str, clock: Clock, interval: float = 1.0) -> None:
        self._store, self._zone, self._replica, self._clock = store, zone, replica, clock
        self._interval = interval
        self._written: ZoneSessionSpec | None = None
        self._since = rfc3339(clock.now())

    async def previous(self) -> ZoneSessionSpec | None:
        with contextlib.suppress(NotFound, StoreError):
            return (await self._store.get("ZoneSession", self._zone)).spec_as(ZoneSessionSpec)
        return None

    async def run(self, session: SourceSession, kick: asyncio.Event) -> None:
        """Write the status whenever it changes (at most every ``interval``) until cancelled."""
        self._written = await self.previous()
        while True:
            await self._write(self.build(session, connected=True))
            await wait_event(kick, self._interval)
            kick.clear()

    async def disconnected(self, session: SourceSession) -> None:
        await self._write(self.build(session, connected=False))

    def build(self, session: SourceSession, *, connected: bool) -> ZoneSessionSpec:
        stats = session.stats
        mono_now, wall_now = self._clock.monotonic(), self._clock.now()

        def wall(mono: float | None) -> str:
            return "" if mono is None else rfc3339(wall_now - timedelta(seconds=mono_now - mono))

        last = self._written
        nack = last.last_nack if last else None
        if stats.last_nack is not None:
            nack = Nack(
                version=stats.last_nack.version, error=stats.last_nack.error, at=wall(stats.last_nack_at)
            )
        applied = stats.applied_version if session.ready else (last.applied_version if last else 0)
        return ZoneSessionSpec(
            zone=self._zone,
            connected=connected,
            replica=self._replica,
            since=self._since,
            applied_version=applied,
            acked_at=wall(stats.last_ack_at) if stats.acks else (last.acked_at if last else ""),
            pending_since=wall(session.pending_since()) if connected else "",
            last_nack=nack,
        )

    async def _write(self, spec: ZoneSessionSpec) -> None:
        if spec == self._written:
            return
        try:
            await self._store.put(Resource("ZoneSession", self._zone, spec))
            self._written = spec
        except StoreError as exc:
            log.warning("could not record the sync status of zone %s: %s", self._zone, exc)
