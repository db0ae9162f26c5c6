"""What a zone reports (zone→global), checked for ownership and written to the global store.

A zone may only write zone-reported kinds of its own zone. Anything else in an update is a
hostile or broken peer: the connection is closed with the reason and nothing of that update
is written. Documents that merely fail validation are refused with a NACK.
"""

from __future__ import annotations

from global_cp.metrics import Metrics
from meshgate.resources.kinds import REGISTRY
from meshgate.resources.model import Resource
from meshgate.resources.registry import SyncDirection
from meshgate.resources.validation import parse_resource
from meshgate.resources.violations import ValidationFailed
from meshgate.store.errors import NotFound, StoreError
from meshgate.store.interface import Delete, Op, Put, Store
from meshgate.store.mirror import StoreMirror
from meshgate.sync.messages import ProtocolError
from meshgate.sync.resource_versions import resource_version
from meshgate.sync.sink import Change, Rejected
from meshgate.sync.versions import key_of, split_key

STREAM = "zone-to-global"


def reported_kinds() -> frozenset[str]:
    return frozenset(d.kind for d in REGISTRY.syncing(SyncDirection.ZONE_TO_GLOBAL))


def known_inventory(mirror: StoreMirror, zone: str) -> dict[str, str]:
    """What the global store holds of ``zone``'s reports: the sink's ``hello``."""
    return {
        key_of(*r.key): resource_version(r)
        for r in mirror.of_kinds(reported_kinds())
        if REGISTRY[r.kind].zone_of(r) == zone
    }


class InventoryApplier:
    def __init__(self, store: Store, mirror: StoreMirror, zone: str, metrics: Metrics) -> None:
        self._store, self._mirror, self._zone, self._metrics = store, mirror, zone, metrics

    async def apply(self, change: Change) -> None:
        kinds = reported_kinds()
        ops: list[Op] = []
        invalid: list[str] = []
        for upsert in change.upserts:
            kind, _name = split_key(upsert.key)
            if kind not in kinds:
                raise ProtocolError(f"{upsert.key}: zones report only {sorted(kinds)}")
            try:
                resource = parse_resource(upsert.doc)
            except ValidationFailed as failed:
                invalid.extend(f"{upsert.key}: {v}" for v in failed.violations)
                continue
            if key_of(*resource.key) != upsert.key:
                raise ProtocolError(f"{upsert.key}: the document is {key_of(*resource.key)}")
            owner = REGISTRY[kind].zone_of(resource)
            if owner != self._zone:
                raise ProtocolError(
                    f"{upsert.key} belongs to zone {owner!r}; this connection speaks for {self._zone!r}"
                )
            ops.append(Put(resource.with_store_fields(revision=None, generation=None, created=None)))
        for key in change.removals:
            kind, name = split_key(key)
            if kind not in kinds:
                raise ProtocolError(f"{key}: zones remove only what they report")
            ops.append(Delete(kind, name))
        ops = await self._owned(ops)
        if invalid:
            raise Rejected.for_documents(invalid)
        await self._write(ops)
        self._metrics.sync_updates.labels(STREAM, "received").inc()

    async def _owned(self, ops: list[Op]) -> list[Op]:
        """Nobody overwrites or removes another zone's reports, even with the same name.
        Removals of what the global store no longer has (an operator deleted it) are moot."""
        kept: list[Op] = []
        for op in ops:
            key = op.resource.key if isinstance(op, Put) else (op.kind, op.name)
            existing: Resource | None = await self._current(key)
            if existing is not None and REGISTRY[key[0]].zone_of(existing) != self._zone:
                raise ProtocolError(f"{key[0]}/{key[1]} belongs to another zone")
            if isinstance(op, Put) or existing is not None:
                kept.append(op)
        return kept

    async def _current(self, key: tuple[str, str]) -> Resource | None:
        """The stored resource: from the mirror when it has it; the store is asked only when the
        mirror has nothing, since a removal must not be skipped because the mirror lags."""
        found = self._mirror.resources.get(key)
        if found is not None:
            return found
        try:
            return await self._store.get(*key)
        except NotFound:
            return None

    async def _write(self, ops: list[Op]) -> None:
        size = self._store.limits.max_ops
        try:
            for start in range(0, len(ops), size):
                await self._store.apply(ops[start : start + size])
        except StoreError as exc:
            raise Rejected(f"the global store could not take it: {exc}") from None
