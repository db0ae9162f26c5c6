"""Kind descriptors: every fact about a kind, declared once.

The sync layer, the API, the CLI and validation read these facts; none of them carries
per-kind code. Adding a kind is adding one descriptor.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter, ValidationError

from meshgate.resources.fields import DnsLabel, Name
from meshgate.resources.model import PathMessage, Resource, Spec


class Scope(enum.Enum):
    """Where a resource belongs."""

    GLOBAL = "global"  # one for the whole installation
    ZONE = "zone"  # belongs to the one zone its spec names (``spec.zone``)


class Owner(enum.Enum):
    """Who may write it."""

    OPERATOR = "operator"  # through the global CP's API, with an admin token
    ZONE = "zone"  # only the zone CP of the zone it belongs to
    DERIVED = "derived"  # computed by the global CP from other resources; read-only in the API
    SYSTEM = "system"  # only the control planes themselves; never served by the API


class SyncDirection(enum.Enum):
    NONE = "none"
    GLOBAL_TO_ZONE = "global-to-zone"
    ZONE_TO_GLOBAL = "zone-to-global"


@dataclass(frozen=True, slots=True)
class Reference:
    """A field of one resource that names another resource."""

    kind: str
    name: str
    path: tuple[str | int, ...]  # relative to spec


@dataclass(frozen=True, slots=True)
class Column:
    """A column of ``meshgate get KIND -o table``: header and a function of the document."""

    header: str
    value: Callable[[Mapping[str, Any]], str]


@dataclass(frozen=True, slots=True)
class UniqueKey:
    """A value no two resources of a kind may share (an anycast VIP and port, say)."""

    key: Hashable
    path: tuple[str | int, ...]  # relative to spec
    shown: str


Lookup = Callable[[str, str], Resource | None]


def _no_references(_spec: Any) -> Iterable[Reference]:
    return ()


def _no_unique_keys(_spec: Any) -> Iterable[UniqueKey]:
    return ()


@dataclass(frozen=True)
class KindDescriptor:
    kind: str
    plural: str
    spec_type: type[Spec]
    scope: Scope
    owner: Owner
    sync: SyncDirection
    short_names: tuple[str, ...] = ()
    dns_label_name: bool = False  # names that appear in SNI or SPIFFE IDs must be one label
    redacted_fields: tuple[str, ...] = ()  # spec fields (by alias) never returned by API reads
    private_fields: tuple[str, ...] = ()  # spec fields that never leave the global CP
    immutable_fields: tuple[str, ...] = ()  # spec fields (by alias) fixed at creation
    references: Callable[[Any], Iterable[Reference]] = _no_references
    # Rules that need the whole resource (name against spec), paths from the document root.
    checks: Callable[[Resource], Iterable[PathMessage]] = lambda _resource: ()
    # Rules against the resources it references (whose existence is already checked).
    relations: Callable[[Resource, Lookup], Iterable[PathMessage]] = lambda _r, _lookup: ()
    unique_keys: Callable[[Any], Iterable[UniqueKey]] = _no_unique_keys
    # For GLOBAL_TO_ZONE kinds: the zones that receive a resource (None: every zone).
    target_zones: Callable[[Any], frozenset[str] | None] = lambda _spec: None
    columns: tuple[Column, ...] = ()
    description: str = ""
    _name_adapter: TypeAdapter[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        adapter: TypeAdapter[str] = TypeAdapter(DnsLabel if self.dns_label_name else Name)
        object.__setattr__(self, "_name_adapter", adapter)

    @property
    def has_references(self) -> bool:
        return self.references is not _no_references

    @property
    def has_unique_keys(self) -> bool:
        return self.unique_keys is not _no_unique_keys

    @property
    def exposed(self) -> bool:
        return self.owner is not Owner.SYSTEM

    def name_errors(self, name: str) -> list[str]:
        try:
            self._name_adapter.validate_python(name, strict=True)
        except ValidationError as exc:
            return [e["msg"] for e in exc.errors()]
        return []

    def zone_of(self, resource: Resource) -> str | None:
        if self.scope is Scope.ZONE:
            zone: str = getattr(resource.spec, "zone")  # noqa: B009 - ZONE scope means spec.zone
            return zone
        return None

    def resource_checks(self, resource: Resource) -> Iterator[PathMessage]:
        """Every rule of one resource on its own, paths from the document root."""
        for path, message in resource.spec.check():
            yield ("spec", *path), message
        yield from self.checks(resource)


class Registry:
    """Kinds by name, plural or short name (case-insensitive)."""

    def __init__(self, descriptors: Sequence[KindDescriptor]) -> None:
        self._by_kind = {d.kind: d for d in descriptors}
        self._lookup: dict[str, KindDescriptor] = {}
        for d in descriptors:
            for alias in {d.kind.lower(), d.plural, *d.short_names}:
                key = alias.lower()
                if key in self._lookup:
                    raise ValueError(f"kind alias {alias!r} declared twice")
                self._lookup[key] = d

    def register(self, descriptor: KindDescriptor) -> None:
        """Add a kind (a plugin's, or a test's stand-in for a newer version) before anything
        starts using the registry."""
        if descriptor.kind in self._by_kind:
            raise ValueError(f"kind {descriptor.kind} declared twice")
        for alias in {descriptor.kind.lower(), descriptor.plural, *descriptor.short_names}:
            if alias.lower() in self._lookup:
                raise ValueError(f"kind alias {alias!r} declared twice")
        self._by_kind[descriptor.kind] = descriptor
        for alias in {descriptor.kind.lower(), descriptor.plural, *descriptor.short_names}:
            self._lookup[alias.lower()] = descriptor

    def get(self, kind: str) -> KindDescriptor | None:
        return self._by_kind.get(kind)

    def __getitem__(self, kind: str) -> KindDescriptor:
        return self._by_kind[kind]

    def resolve(self, name: str) -> KindDescriptor | None:
        """A kind from what a user typed: ``GlobalService``, ``globalservices``, ``gsvc``."""
        return self._lookup.get(name.lower())

    def __iter__(self) -> Iterator[KindDescriptor]:
        return iter(self._by_kind.values())

    def exposed(self) -> list[KindDescriptor]:
        return [d for d in self._by_kind.values() if d.exposed]

    def syncing(self, direction: SyncDirection) -> list[KindDescriptor]:
        return [d for d in self._by_kind.values() if d.sync is direction]
