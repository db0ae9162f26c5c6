"""Applying what the global CP sends (global→zone) to the zone's own store.

Each update is checked whole (every document must parse, and be of a kind that syncs to
zones), then written in one transaction together with the checkpoint that records it.
Any failure, a kind this zone CP does not know (a newer global) or a disk that refuses the
write, rejects the update: a NACK with the reason, and the last good state stays.
"""

from __future__ import annotations

from collections.abc import Callable

from meshgate.clock import Clock, rfc3339
from meshgate.resources.kinds import REGISTRY
from meshgate.resources.kinds.system import SyncCheckpointSpec
from meshgate.resources.model import Resource
from meshgate.resources.registry import SyncDirection
from meshgate.resources.validation import parse_resource
from meshgate.resources.violations import ValidationFailed
from meshgate.store.errors import NotFound, StoreError
from meshgate.store.interface import Delete, Op, Put, Store
from meshgate.store.mirror import StoreMirror
from meshgate.sync.resource_versions import resource_version
from meshgate.sync.sink import Change, Rejected
from meshgate.sync.versions import key_of, split_key

CHECKPOINT = ("SyncCheckpoint", "global-to-zone")


def synced_kinds() -> frozenset[str]:
    return frozenset(d.kind for d in REGISTRY.syncing(SyncDirection.GLOBAL_TO_ZONE))


def known_state(mirror: StoreMirror) -> tuple[dict[str, str], int]:
    """What the zone holds from the global CP, for its ``hello`` (a mirror that lags a moment
    only makes the global CP resend a few documents the zone already has)."""
    known = {key_of(*r.key): resource_version(r) for r in mirror.of_kinds(synced_kinds())}
    checkpoint = mirror.resources.get(CHECKPOINT)
    return known, checkpoint.spec_as(SyncCheckpointSpec).version if checkpoint else 0


class GlobalApplier:
    def __init__(self, store: Store, clock: Clock, on_applied: Callable[[int], None]) -> None:
        self._store, self._clock, self._on_applied = store, clock, on_applied

    async def apply(self, change: Change) -> None:
        kinds = synced_kinds()
        problems: list[str] = []
        ops: list[Op] = []
        for upsert in change.upserts:
            kind, _ = split_key(upsert.key)
            if REGISTRY.get(kind) is None:
                problems.append(
                    f"{upsert.key}: unknown kind {kind!r} (is the global CP newer than this zone CP?)"
                )
                continue
            if kind not in kinds:
                problems.append(f"{upsert.key}: {kind} does not sync to zones")
                continue
            try:
                resource = parse_resource(upsert.doc, allow_system=True)
            except ValidationFailed as failed:
                problems.extend(f"{upsert.key}: {v}" for v in failed.violations)
                continue
            ops.append(Put(resource.with_store_fields(revision=None, generation=None, created=None)))
        removals = [split_key(k) for k in change.removals]
        problems += [f"{k}/{n}: {k} does not sync to zones" for k, n in removals if k not in kinds]
        if problems:
            raise Rejected.for_documents(problems)
        try:
            ops += [Delete(k, n) for k, n in removals if await self._exists(k, n)]
            checkpoint = SyncCheckpointSpec(version=change.version, applied_at=rfc3339(self._clock.now()))
            ops.append(Put(Resource(*CHECKPOINT, checkpoint)))
            await self._store.apply(ops)
        except StoreError as exc:
            raise Rejected(f"cannot persist the update: {exc}") from None
        self._on_applied(change.version)

    async def _exists(self, kind: str, name: str) -> bool:
        try:
            await self._store.get(kind, name)
        except NotFound:
            return False
        return True
