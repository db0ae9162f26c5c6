"""What one op does to the current state: the same rules for every backend."""

from __future__ import annotations

from collections.abc import Sequence

from meshgate.resources.model import Resource
from meshgate.store.errors import AlreadyExists, Conflict, NotFound, TooLarge
from meshgate.store.interface import Delete, Expect, Limits, Op, Outcome, Put


def op_key(op: Op) -> tuple[str, str]:
    return op.resource.key if isinstance(op, Put) else (op.kind, op.name)


def check_batch(ops: Sequence[Op], limits: Limits, encoded_size: int) -> None:
    keys = [op_key(op) for op in ops]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise ValueError(f"{dup[0]}/{dup[1]} appears twice in one apply")
    if len(ops) > limits.max_ops:
        raise TooLarge(
            f"an apply of {len(ops)} resources exceeds the store's limit of {limits.max_ops} "
            "per atomic apply; split the file into smaller applies"
        )
    if encoded_size > limits.max_bytes:
        raise TooLarge(
            f"an apply of {encoded_size} bytes exceeds the store's limit of {limits.max_bytes} "
            "bytes per atomic apply; split the file into smaller applies"
        )


def plan_put(op: Put, current: Resource | None, now: str) -> tuple[Outcome, Resource]:
    """The resource to write (without revision), or the current one if nothing changes."""
    incoming = op.resource
    if op.expect is Expect.ABSENT and current is not None:
        raise AlreadyExists(*incoming.key)
    if incoming.revision is not None and (current is None or current.revision != incoming.revision):
        raise Conflict(*incoming.key, incoming.revision, None if current is None else current.revision)
    if op.expect is Expect.PRESENT and current is None:
        raise NotFound(*incoming.key)
    if current is None:
        return Outcome.CREATED, incoming.with_store_fields(revision=None, generation=1, created=now)
    if current.same_content(incoming):
        return Outcome.UNCHANGED, current
    generation = (current.generation or 0) + (0 if current.spec == incoming.spec else 1)
    return Outcome.UPDATED, incoming.with_store_fields(
        revision=None, generation=generation, created=current.created
    )


def plan_delete(op: Delete, current: Resource | None) -> Resource:
    if current is None:
        raise NotFound(op.kind, op.name)
    if op.revision is not None and current.revision != op.revision:
        raise Conflict(op.kind, op.name, op.revision, current.revision)
    return current
