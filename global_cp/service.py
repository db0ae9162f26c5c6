"""Operator writes and reads, independent of HTTP.

Every operator write is validated against one snapshot of the store and committed only
if that snapshot is still current: the apply includes a compare-and-swap on the
``WriteFence`` resource, so two replicas (or two requests) validating at once cannot
both commit against the same state. The loser re-validates against the new state.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass

from global_cp.errors import PermissionDenied, TooBusy
from meshgate.resources import consistency
from meshgate.resources.kinds import REGISTRY
from meshgate.resources.kinds.system import WriteFenceSpec
from meshgate.resources.model import Resource
from meshgate.resources.registry import Owner
from meshgate.resources.selectors import Selector
from meshgate.resources.validation import parse_documents
from meshgate.resources.violations import ValidationFailed, Violation
from meshgate.store import planning
from meshgate.store.errors import Conflict, NotFound
from meshgate.store.interface import Delete, Expect, Listing, Op, Outcome, Put, Store
from meshgate.store.mirror import StoreMirror

FENCE_KEY = ("WriteFence", "operator")


@dataclass(frozen=True, slots=True)
class ItemResult:
    kind: str
    name: str
    outcome: Outcome
    revision: int | None
    resource: Resource | None = None  # as written (None for deletes and dry runs)


@dataclass(frozen=True, slots=True)
class WriteReport:
    dry_run: bool
    revision: int
    items: tuple[ItemResult, ...]


class ResourceService:
    def __init__(self, store: Store, mirror: StoreMirror, *, attempts: int = 8) -> None:
        self._store = store
        self._mirror = mirror
        self._attempts = attempts

    @property
    def max_apply(self) -> int:
        """Resources one apply may hold: the store's limit less the fence."""
        return self._store.limits.max_ops - 1

    async def get(self, kind: str, name: str) -> Resource:
        return await self._store.get(kind, name)

    async def list(self, kind: str | None, selector: Selector | None = None) -> Listing:
        listing = await self._store.list(kind, selector=selector)
        if kind is None:
            exposed = tuple(r for r in listing.items if REGISTRY[r.kind].exposed)
            return Listing(exposed, listing.revision)
        return listing

    async def apply(
        self, docs: Sequence[object], *, dry_run: bool = False, expect: Expect = Expect.ANY
    ) -> WriteReport:
        resources = parse_documents(docs)
        _operator_only(resources)
        if len(resources) > self.max_apply:
            raise ValidationFailed(
                [
                    Violation(
                        "",
                        f"{len(resources)} resources in one apply; at most "
                        f"{self.max_apply} fit one atomic write to this store: split the file",
                    )
                ]
            )
        changes = [consistency.Change(i, r.key, r) for i, r in enumerate(resources)]
        return await self._write(changes, [Put(r, expect) for r in resources], dry_run)

    async def delete(
        self, kind: str, name: str, *, revision: int | None = None, dry_run: bool = False
    ) -> WriteReport:
        descriptor = REGISTRY.get(kind)
        if descriptor is None or not descriptor.exposed:
            raise NotFound(kind, name)
        return await self._write(
            [consistency.Change(0, (kind, name), None)], [Delete(kind, name, revision)], dry_run
        )

    async def _write(
        self, changes: builtins.list[consistency.Change], ops: builtins.list[Op], dry_run: bool
    ) -> WriteReport:
        # Validate against the mirror, caught up with the store as of now (read your writes);
        # the fence makes a commit against a snapshot someone else changed fail, not corrupt.
        await self._mirror.caught_up(await self._store.revision())
        for _attempt in range(self._attempts):
            state = self._mirror.resources  # no await until the apply: one consistent snapshot
            revision = self._mirror.revision
            for change in changes:
                if change.resource is None and change.key not in state:
                    raise NotFound(*change.key)
            cascaded = consistency.cascade([c.key for c in changes if c.resource is None], state)
            all_changes = changes + [consistency.Change(-1, k, None) for k in cascaded]
            violations = consistency.check(all_changes, state)
            if violations:
                raise ValidationFailed(violations)
            all_ops = ops + [Delete(*k) for k in cascaded]
            predicted = _predict(all_ops, state, revision)
            if dry_run:
                return predicted
            if all(item.outcome is Outcome.UNCHANGED for item in predicted.items):
                return WriteReport(False, revision, predicted.items)  # nothing to write
            try:
                result = await self._store.apply([*all_ops, _fence(state.get(FENCE_KEY))])
            except Conflict as conflict:
                if (conflict.kind, conflict.name) == FENCE_KEY:
                    # Another writer committed first: validate again once the mirror has it.
                    await self._mirror.caught_up(conflict.actual or await self._store.revision())
                    continue
                raise
            await self._mirror.caught_up(result.revision)
            items = tuple(
                ItemResult(
                    r.resource.kind,
                    r.resource.name,
                    r.outcome,
                    r.resource.revision,
                    None if r.outcome is Outcome.DELETED else r.resource,
                )
                for r in result.results[: len(all_ops)]
            )
            return WriteReport(False, result.revision, items)
        raise TooBusy("other writers kept committing first; nothing was written, retry")


def _operator_only(resources: Sequence[Resource]) -> None:
    refused = [r for r in resources if REGISTRY[r.kind].owner is not Owner.OPERATOR]
    if refused:
        names = ", ".join(f"{r.kind}/{r.name}" for r in refused)
        raise PermissionDenied(
            f"{names}: written only by the zone control plane that owns it, not through the API"
        )


def _fence(current: Resource | None) -> Put:
    serial = 0 if current is None else current.spec_as(WriteFenceSpec).serial + 1
    fence = Resource(*FENCE_KEY, WriteFenceSpec(serial=serial))
    if current is None:
        return Put(fence, Expect.ABSENT)
    return Put(fence.with_store_fields(revision=current.revision, generation=None, created=None))


def _predict(ops: Sequence[Op], state: dict[tuple[str, str], Resource], revision: int) -> WriteReport:
    """What the apply would do, without doing it (raises what the apply would raise)."""
    items = []
    for op in ops:
        key = planning.op_key(op)
        current = state.get(key)
        if isinstance(op, Delete):
            planning.plan_delete(op, current)
            items.append(ItemResult(*key, Outcome.DELETED, None))
        else:
            outcome, planned = planning.plan_put(op, current, "")
            unchanged = outcome is Outcome.UNCHANGED
            items.append(
                ItemResult(
                    *key, outcome, current.revision if current else None, planned if unchanged else None
                )
            )
    return WriteReport(True, revision, tuple(items))
