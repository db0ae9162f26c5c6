"""Rules across resources: references that must resolve, values that must not collide,
fields that cannot change. Checked against the state the apply would leave behind."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from meshgate.resources.kinds import REGISTRY
from meshgate.resources.model import Resource
from meshgate.resources.registry import KindDescriptor, Owner, Scope
from meshgate.resources.violations import Violation, format_path

Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Change:
    """One document of an apply: a resource to write, or a key to delete."""

    index: int
    key: Key
    resource: Resource | None  # None: delete


class _After(Mapping[Key, Resource]):
    """The state an apply would leave behind, without copying the state."""

    def __init__(self, state: Mapping[Key, Resource], changes: Sequence[Change]) -> None:
        self._state = state
        self._overlay = {c.key: c.resource for c in changes}

    def __getitem__(self, key: Key) -> Resource:
        found = self._overlay[key] if key in self._overlay else self._state.get(key)
        if found is None:
            raise KeyError(key)
        return found

    def __iter__(self) -> Iterator[Key]:
        yield from (k for k in self._state if k not in self._overlay)
        yield from (k for k, r in self._overlay.items() if r is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def of_kinds(self, kinds: frozenset[str], *, and_written: bool = False) -> Iterator[Resource]:
        """Resources of ``kinds`` (and, if asked, every resource the apply writes); the state
        is walked once and nothing is copied."""
        for key, resource in self._state.items():
            if key[0] in kinds and key not in self._overlay:
                yield resource
        for key, changed in self._overlay.items():
            if changed is not None and (and_written or key[0] in kinds):
                yield changed


def _kinds_with(has: Callable[[KindDescriptor], bool]) -> frozenset[str]:
    return frozenset(d.kind for d in REGISTRY if has(d))


def check(changes: Sequence[Change], state: Mapping[Key, Resource]) -> list[Violation]:
    """Violations the changes would cause, each attributed to the document that causes it.

    Only resources that can be affected are looked at: the ones written, and those of kinds
    that reference other resources (a Service write does not walk ten thousand Services).
    """
    after = _After(state, changes)
    index_of = {c.key: c.index for c in changes}
    out: list[Violation] = []
    for resource in after.of_kinds(_kinds_with(lambda d: d.has_references), and_written=True):
        refs = _references(resource)
        broken_by = sorted({index_of[r] for r in refs if r in index_of} - {index_of.get(resource.key)})
        if resource.key not in index_of and not broken_by:
            continue
        for path, message, missing in _problems(resource, after):
            if resource.key in index_of:
                out.append(_at(index_of[resource.key], resource.key, path, message))
                continue
            for index in broken_by:
                key = next(c.key for c in changes if c.index == index)
                if missing == key:
                    shown = f"still referenced by {resource.kind}/{resource.name} ({format_path(path)})"
                else:
                    shown = f"would break {resource.kind}/{resource.name}: {format_path(path)}: {message}"
                out.append(_at(index, key, (), shown))
    out.extend(_immutable(changes, state))
    out.extend(_collisions(changes, after))
    return sorted(out, key=lambda v: (v.document or 0, v.path))


def cascade(deleted: Iterable[Key], state: Mapping[Key, Resource]) -> list[Key]:
    """Zone-reported resources that go with a deleted Zone."""
    zones = {name for kind, name in deleted if kind == "Zone"}
    if not zones:
        return []
    out = []
    for key, resource in state.items():
        descriptor = REGISTRY[resource.kind]
        owned_by_zone = descriptor.owner is Owner.ZONE and descriptor.scope is Scope.ZONE
        if owned_by_zone and descriptor.zone_of(resource) in zones:
            out.append(key)
    return sorted(out)


def _references(resource: Resource) -> set[Key]:
    return {(r.kind, r.name) for r in REGISTRY[resource.kind].references(resource.spec)}


Problem = tuple[tuple[str | int, ...], str, Key | None]  # path, message, missing reference


def _problems(resource: Resource, after: Mapping[Key, Resource]) -> list[Problem]:
    descriptor = REGISTRY[resource.kind]
    problems: list[Problem] = []
    for ref in descriptor.references(resource.spec):
        if (ref.kind, ref.name) not in after:
            problems.append(
                (("spec", *ref.path), f"{ref.kind} {ref.name!r} does not exist", (ref.kind, ref.name))
            )
    lookup = lambda kind, name: after.get((kind, name))  # noqa: E731
    problems.extend((path, msg, None) for path, msg in descriptor.relations(resource, lookup))
    return problems


def _immutable(changes: Sequence[Change], state: Mapping[Key, Resource]) -> Iterable[Violation]:
    for change in changes:
        old = state.get(change.key)
        if change.resource is None or old is None:
            continue
        descriptor = REGISTRY[change.key[0]]
        new_spec, old_spec = change.resource.spec_dict(), old.spec_dict()
        for field in descriptor.immutable_fields:
            if new_spec.get(field) != old_spec.get(field):
                yield _at(
                    change.index,
                    change.key,
                    ("spec", field),
                    f"cannot change after creation (it is {old_spec.get(field)!r}); "
                    "delete and recreate to change it",
                )


def _collisions(changes: Sequence[Change], after: _After) -> Iterable[Violation]:
    owners: dict[object, list[Key]] = {}
    for resource in after.of_kinds(_kinds_with(lambda d: d.has_unique_keys)):
        for unique in REGISTRY[resource.kind].unique_keys(resource.spec):
            owners.setdefault((resource.kind, unique.key), []).append(resource.key)
    for change in changes:
        if change.resource is None:
            continue
        resource = change.resource
        for unique in REGISTRY[resource.kind].unique_keys(resource.spec):
            others = [k for k in owners[(resource.kind, unique.key)] if k != resource.key]
            if others:
                yield _at(
                    change.index,
                    change.key,
                    ("spec", *unique.path),
                    f"{unique.shown} is already used by {others[0][0]}/{others[0][1]}",
                )


def _at(index: int, key: Key, path: tuple[str | int, ...], message: str) -> Violation:
    return Violation(format_path(path), message, index, key[0], key[1])
