"""The cross-zone endpoint table, derived from what zones report.

For each service with instances anywhere: per zone, how many instances are healthy and the
addresses of that zone's ingresses. Written as ``CrossZoneEndpoints`` resources, which every
zone receives. Recomputed (debounced) whenever a Dataplane, ZoneIngress or Zone changes.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable

from meshgate.lifecycle import OwnedTask
from meshgate.resources.kinds.cross_zone import CrossZoneEndpointsSpec, Ingress, ZoneEndpoints
from meshgate.resources.kinds.dataplane import DataplaneSpec
from meshgate.resources.kinds.zone import ZoneSpec
from meshgate.resources.kinds.zone_ingress import ZoneIngressSpec
from meshgate.resources.model import Resource
from meshgate.store.errors import NotFound, StoreError
from meshgate.store.interface import Delete, Op, Put, Store
from meshgate.store.mirror import Change, StoreMirror

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
    """Keeps ``CrossZoneEndpoints`` equal to ``derive(...)`` of the mirrored store: recomputed
    (debounced) after any change to its inputs, written only where it differs."""

    def __init__(self, store: Store, mirror: StoreMirror, debounce: float = 0.05) -> None:
        self._store, self._mirror, self._debounce = store, mirror, debounce
        self._dirty = asyncio.Event()
        self._task = OwnedTask("cross-zone-endpoints")
        self._unsubscribe: Callable[[], None] | None = None

    async def start(self) -> None:
        self._unsubscribe = self._mirror.subscribe(self._changed)
        self._dirty.set()
        self._task.start(self._run())

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        await self._task.stop()

    def _changed(self, changes: list[Change]) -> None:
        if any(kind in INPUTS for (kind, _name), _resource in changes):
            self._dirty.set()

    async def reconcile(self) -> None:
        resources = list(self._mirror.resources.values())
        desired = derive(resources)
        current = {r.name: r for r in resources if r.kind == "CrossZoneEndpoints"}
        ops: list[Op] = [
            Put(Resource("CrossZoneEndpoints", name, spec))
            for name, spec in desired.items()
            if name not in current or current[name].spec != spec
        ]
        ops += [Delete("CrossZoneEndpoints", name) for name in current if name not in desired]
        for start in range(0, len(ops), self._store.limits.max_ops):
            result = await self._store.apply(ops[start : start + self._store.limits.max_ops])
            await self._mirror.caught_up(result.revision)

    async def _run(self) -> None:
        while True:
            await self._dirty.wait()
            await asyncio.sleep(self._debounce)  # let a burst of reports settle into one write
            self._dirty.clear()
            try:
                await self.reconcile()
            except NotFound:  # the mirror lagged behind another writer: look again
                self._dirty.set()
            except StoreError as exc:
                log.warning("cross-zone endpoints: %s; retrying", exc)
                self._dirty.set()
                await asyncio.sleep(1.0)
