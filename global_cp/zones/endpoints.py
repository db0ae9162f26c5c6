"""The cross-zone endpoint table, derived from what zones report.

For each service with instances anywhere: per zone, how many instances are healthy and the
addresses of that zone's ingresses. Written as ``CrossZoneEndpoints`` resources, which every
zone receives. Recomputed (debounced) whenever a Dataplane, ZoneIngress or Zone changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict

from meshgate.resources.kinds.cross_zone import CrossZoneEndpointsSpec, Ingress, ZoneEndpoints
from meshgate.resources.kinds.dataplane import DataplaneSpec
from meshgate.resources.kinds.zone import ZoneSpec
from meshgate.resources.kinds.zone_ingress import ZoneIngressSpec
from meshgate.resources.model import Resource
from meshgate.store.errors import StoreError
from meshgate.store.interface import Delete, Op, Put, Store

log = logging.getLogger(__name__)

INPUTS = frozenset({"Dataplane", "ZoneIngress", "Zone"})


def derive(resources: list[Resource]) -> dict[str, CrossZoneEndpointsSpec]:
    enabled = {r.name for r in resources if r.kind == "Zone" and r.spec_as(ZoneSpec).enabled}
    healthy: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    ingresses: dict[str, list[Ingress]] = defaultdict(list)
    for r in resources:
        if r.kind == "Dataplane":
            dp = r.spec_as(DataplaneSpec)
            for workload in dp.workloads:
                healthy[workload.service][dp.zone] += workload.health == "healthy"
        elif r.kind == "ZoneIngress":
            zi = r.spec_as(ZoneIngressSpec)
            ingresses[zi.zone].append(Ingress(address=zi.address, port=zi.port))
    table = {}
    for service, zones in sorted(healthy.items()):
        entries = [
            ZoneEndpoints(
                zone=zone, healthy=count, ingresses=sorted(ingresses[zone], key=lambda i: (i.address, i.port))
            )
            for zone, count in sorted(zones.items())
            if zone in enabled
        ]
        if entries:
            table[service] = CrossZoneEndpointsSpec(service=service, zones=entries)
    return table


class CrossZoneReconciler:
    def __init__(self, store: Store, debounce: float = 0.05) -> None:
        self._store, self._debounce = store, debounce
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="cross-zone-endpoints")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def reconcile(self) -> int:
        listing = await self._store.list()
        desired = derive(list(listing.items))
        current = {r.name: r for r in listing.items if r.kind == "CrossZoneEndpoints"}
        ops: list[Op] = [
            Put(Resource("CrossZoneEndpoints", name, spec))
            for name, spec in desired.items()
            if name not in current or current[name].spec != spec
        ]
        ops += [Delete("CrossZoneEndpoints", name) for name in current if name not in desired]
        for start in range(0, len(ops), self._store.limits.max_ops):
            await self._store.apply(ops[start : start + self._store.limits.max_ops])
        return listing.revision

    async def _run(self) -> None:
        backoff = 0.2
        while True:
            try:
                revision = await self.reconcile()
                backoff = 0.2
                dirty = asyncio.Event()
                worker = asyncio.create_task(self._worker(dirty))
                try:
                    async for _event in self._store.watch(from_revision=revision, kinds=INPUTS):
                        dirty.set()
                finally:
                    worker.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await worker
            except StoreError as exc:
                log.warning("cross-zone endpoints: %s; retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    async def _worker(self, dirty: asyncio.Event) -> None:
        while True:
            await dirty.wait()
            await asyncio.sleep(self._debounce)  # let a burst of reports settle into one write
            dirty.clear()
            try:
                await self.reconcile()
            except StoreError as exc:
                log.warning("cross-zone endpoints: %s", exc)
                dirty.set()
                await asyncio.sleep(1.0)
