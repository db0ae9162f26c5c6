"""The zone's ZoneInsight, kept in its own store (and so reported to the global CP):
what it applied, what it last rejected, how many proxies it has."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import timedelta

from meshgate import __version__
from meshgate.clock import Clock, rfc3339
from meshgate.lifecycle import OwnedTask
from meshgate.resources.kinds.zone_insight import Nack, ZoneInsightSpec
from meshgate.resources.model import Resource
from meshgate.store.errors import StoreError
from meshgate.store.interface import Store
from zone_cp.link import LinkState

log = logging.getLogger(__name__)


class InsightWriter:
    def __init__(
        self, store: Store, zone: str, state: LinkState, clock: Clock, interval: float = 2.0,
        proxies: Callable[[], int] = lambda: 0,
    ) -> None:  # fmt: skip
        self._store, self._zone, self._state, self._clock = store, zone, state, clock
        self._interval = interval
        self.proxies = proxies  # how many proxies are connected right now
        self._kick = asyncio.Event()
        self._task = OwnedTask("zone-insight")
        self._written: ZoneInsightSpec | None = None

    def kick(self) -> None:
        self._kick.set()

    async def start(self) -> None:
        self._kick.set()
        self._task.start(self._run())

    async def stop(self) -> None:
        await self._task.stop()

    async def _run(self) -> None:
        while True:
            await self._kick.wait()
            self._kick.clear()
            try:
                await self._write()
            except StoreError as exc:
                log.warning("could not record the zone insight: %s", exc)
            # Coalesce: each write is a report the global CP must take, so at most one per
            # interval however fast updates arrive (the global CP sees applied versions live).
            await asyncio.sleep(self._interval)

    async def _write(self) -> None:
        proxies = self.proxies()
        nack = None
        if self._state.last_nack and self._state.last_nack_at is not None:
            at = self._clock.now() - timedelta(seconds=self._clock.monotonic() - self._state.last_nack_at)
            nack = Nack(
                version=self._state.applied_version, error=self._state.last_nack[:1000], at=rfc3339(at)
            )
        spec = ZoneInsightSpec(
            zone=self._zone,
            applied_version=self._state.applied_version,
            last_nack=nack,
            connected_proxies=proxies,
            cp_version=__version__,
        )
        if spec == self._written:
            return
        stamped = spec.model_copy(update={"updated_at": rfc3339(self._clock.now())})
        await self._store.put(Resource("ZoneInsight", self._zone, stamped))
        self._written = spec
