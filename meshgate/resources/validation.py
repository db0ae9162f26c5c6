"""From documents to resources: every violation at once, each with its field path."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from meshgate.resources.kinds import REGISTRY
from meshgate.resources.model import API_VERSION, Metadata, Resource
from meshgate.resources.registry import KindDescriptor
from meshgate.resources.violations import ValidationFailed, Violation, format_path

ENVELOPE_FIELDS = frozenset({"apiVersion", "kind", "metadata", "spec", "status"})

_TYPE_NAMES = {
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "bool_type": "must be true or false",
    "list_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "missing": "required",
    "extra_forbidden": "unknown field",
    "string_pattern_mismatch": "has an invalid format",
}


def _message(error: ErrorDetails) -> str:
    kind = error["type"]
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    if kind in _TYPE_NAMES:
        return _TYPE_NAMES[kind]
    if kind == "literal_error":
        expected = str(ctx["expected"])
        return "must be one of " + expected.replace("'", "").replace(" or ", ", ")
    if kind == "greater_than_equal":
        return f"must be at least {ctx['ge']}"
    if kind == "less_than_equal":
        return f"must be at most {ctx['le']}"
    if kind == "too_short":
        return f"must have at least {ctx['min_length']} item(s)"
    if kind == "too_long":
        return f"must have at most {ctx['max_length']} item(s)"
    if kind == "string_too_long":
        return f"must be at most {ctx['max_length']} characters"
    return str(error["msg"])


def pydantic_violations(exc: ValidationError, prefix: tuple[str | int, ...]) -> list[Violation]:
    out = []
    for error in exc.errors():
        loc = list(error["loc"])
        message = _message(error)
        if loc and loc[-1] == "[key]":  # a bad mapping key, not its value
            loc.pop()
            message = f"invalid key: {message}"
        out.append(Violation(format_path((*prefix, *loc)), message))
    return out


def parse_resource(doc: object, *, allow_system: bool = False) -> Resource:
    """One document to one resource; raises ValidationFailed with every violation."""
    if not isinstance(doc, dict):
        raise ValidationFailed(
            [Violation("", "a document must be a mapping with apiVersion, kind, metadata, spec")]
        )
    violations: list[Violation] = []
    for key in doc:
        if key not in ENVELOPE_FIELDS:
            violations.append(Violation(format_path((str(key),)), "unknown field"))
    if doc.get("apiVersion") != API_VERSION:
        violations.append(Violation("apiVersion", f"must be {API_VERSION}"))
    descriptor = _descriptor(doc.get("kind"), allow_system, violations)
    metadata = _metadata(doc.get("metadata"), violations)
    if metadata is not None and descriptor is not None:
        violations.extend(Violation("metadata.name", m) for m in descriptor.name_errors(metadata.name))
    spec = None
    if "spec" not in doc:
        violations.append(Violation("spec", "required"))
    elif descriptor is not None:
        try:
            spec = descriptor.spec_type.model_validate(doc["spec"])
        except ValidationError as exc:
            violations.extend(pydantic_violations(exc, ("spec",)))
    if violations or descriptor is None or metadata is None or spec is None:
        raise ValidationFailed(violations)
    resource = Resource(
        kind=descriptor.kind,
        name=metadata.name,
        spec=spec,
        labels=metadata.labels,
        revision=int(metadata.resourceVersion) if metadata.resourceVersion else None,
    )
    violations = [Violation(format_path(p), m) for p, m in descriptor.resource_checks(resource)]
    if violations:
        raise ValidationFailed(violations)
    return resource


def _descriptor(kind: object, allow_system: bool, out: list[Violation]) -> KindDescriptor | None:
    if kind is None:
        out.append(Violation("kind", "required"))
        return None
    descriptor = REGISTRY.get(kind) if isinstance(kind, str) else None
    if descriptor is None or not (descriptor.exposed or allow_system):
        known = ", ".join(d.kind for d in REGISTRY.exposed())
        out.append(Violation("kind", f"unknown kind {kind!r}; known kinds: {known}"))
        return None
    return descriptor


def _metadata(raw: object, out: list[Violation]) -> Metadata | None:
    if raw is None:
        out.append(Violation("metadata", "required"))
        return None
    try:
        metadata = Metadata.model_validate(raw)
    except ValidationError as exc:
        out.extend(pydantic_violations(exc, ("metadata",)))
        return None
    rv = metadata.resourceVersion
    if rv is not None and not rv.isdigit():
        out.append(Violation("metadata.resourceVersion", "must be a resourceVersion as read back"))
        return None
    return metadata


def parse_documents(docs: Sequence[object], *, allow_system: bool = False) -> list[Resource]:
    """Every document of a file or request; violations carry the document's index."""
    violations: list[Violation] = []
    resources: list[Resource] = []
    first_index: dict[tuple[str, str], int] = {}
    for index, doc in enumerate(docs):
        kind, name = _identify(doc)
        try:
            resource = parse_resource(doc, allow_system=allow_system)
        except ValidationFailed as failed:
            violations.extend(v.located(index, kind, name) for v in failed.violations)
            continue
        if resource.key in first_index:
            violations.append(
                Violation(
                    "metadata.name",
                    f"{resource.kind}/{resource.name} is also document {first_index[resource.key]}",
                    index,
                    kind,
                    name,
                )
            )
            continue
        first_index[resource.key] = index
        resources.append(resource)
    if violations:
        raise ValidationFailed(violations)
    return resources


def _identify(doc: object) -> tuple[str | None, str | None]:
    if not isinstance(doc, dict):
        return None, None
    kind = doc.get("kind") if isinstance(doc.get("kind"), str) else None
    meta = doc.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) and isinstance(meta.get("name"), str) else None
    return kind, name


def located(violations: Iterable[Violation], index: int, resource: Resource) -> list[Violation]:
    return [v.located(index, resource.kind, resource.name) for v in violations]
