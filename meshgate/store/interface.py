"""The store: five operations, watch from a revision, and atomic multi-resource apply.

Every backend (SQLite, etcd) passes one contract suite (``tests/contract``). Revisions
are one counter for the whole store: each committed apply gets the next revision, and
each resource carries the revision of its last change as its ``resourceVersion``.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass

from meshgate.resources.model import Resource
from meshgate.resources.selectors import Selector


class Expect(enum.Enum):
    ANY = "any"  # create or update
    ABSENT = "absent"  # create only
    PRESENT = "present"  # update only


@dataclass(frozen=True, slots=True)
class Put:
    """Write ``resource``. If ``resource.revision`` is set, it must be the current one."""

    resource: Resource
    expect: Expect = Expect.ANY


@dataclass(frozen=True, slots=True)
class Delete:
    kind: str
    name: str
    revision: int | None = None  # if set, the resource must still be at this revision


Op = Put | Delete


class Outcome(enum.Enum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class OpResult:
    outcome: Outcome
    resource: Resource  # after the write; for a delete, the last state


@dataclass(frozen=True, slots=True)
class ApplyResult:
    revision: int  # store revision after the apply (unchanged if nothing changed)
    results: tuple[OpResult, ...]


class EventType(enum.Enum):
    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: EventType
    resource: Resource  # for DELETED, the last state before deletion
    revision: int


@dataclass(frozen=True, slots=True)
class Listing:
    items: tuple[Resource, ...]
    revision: int  # watch from here to see every later change


@dataclass(frozen=True, slots=True)
class Limits:
    """What one atomic apply may hold (etcd's defaults: 128 ops, 1.5 MiB per request)."""

    max_ops: int
    max_bytes: int


class Store(abc.ABC):
    limits: Limits

    @abc.abstractmethod
    async def apply(self, ops: Sequence[Op]) -> ApplyResult:
        """All ops or none. Raises NotFound, AlreadyExists, Conflict, TooLarge, Unavailable."""

    @abc.abstractmethod
    async def get(self, kind: str, name: str) -> Resource:
        """Raises NotFound."""

    @abc.abstractmethod
    async def list(self, kind: str | None = None, *, selector: Selector | None = None) -> Listing:
        """Resources of one kind (or all kinds), sorted by kind then name."""

    @abc.abstractmethod
    def watch(self, *, from_revision: int, kinds: Collection[str] | None = None) -> AsyncIterator[WatchEvent]:
        """Every change after ``from_revision``, in revision order, forever.

        Raises Compacted if that history is gone, Unavailable if the backend stays away.
        """

    @abc.abstractmethod
    async def revision(self) -> int:
        """The store's current revision."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def create(self, resource: Resource) -> Resource:
        return (await self.apply([Put(resource, Expect.ABSENT)])).results[0].resource

    async def update(self, resource: Resource) -> Resource:
        return (await self.apply([Put(resource, Expect.PRESENT)])).results[0].resource

    async def put(self, resource: Resource) -> OpResult:
        return (await self.apply([Put(resource)])).results[0]

    async def delete(self, kind: str, name: str, *, revision: int | None = None) -> Resource:
        return (await self.apply([Delete(kind, name, revision)])).results[0].resource
