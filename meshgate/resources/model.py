"""The resource envelope: ``apiVersion``, ``kind``, ``metadata``, ``spec``.

A ``Resource`` is an immutable value. Its spec is a frozen pydantic model of the kind's
own type; everything about the kind (scope, owner, sync direction, checks) lives in its
``KindDescriptor`` (see ``registry.py``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from meshgate.resources.fields import LabelKey, LabelValue, ResourceVersion, Timestamp

API_VERSION = "meshgate/v1alpha1"

PathMessage = tuple[tuple[str | int, ...], str]


class Spec(BaseModel):
    """Base of every kind's spec: strict types, unknown fields rejected, immutable."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
    )

    def check(self) -> Iterator[PathMessage]:
        """Cross-field rules within one spec, as (path relative to ``spec``, message)."""
        return iter(())


class Metadata(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: str
    labels: dict[LabelKey, LabelValue] = {}
    resourceVersion: ResourceVersion | None = None
    generation: int | None = None
    creationTimestamp: Timestamp | None = None


S = TypeVar("S", bound=Spec)


@dataclass(frozen=True, slots=True)
class Resource:
    """One stored or submitted resource. ``revision`` is the store's modification revision."""

    kind: str
    name: str
    spec: Spec
    labels: Mapping[str, str] = field(default_factory=dict)
    revision: int | None = None
    generation: int | None = None
    created: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.name)

    def spec_as(self, spec_type: type[S]) -> S:
        if not isinstance(self.spec, spec_type):
            raise TypeError(f"{self.kind}/{self.name} has spec {type(self.spec).__name__}")
        return self.spec

    def with_store_fields(
        self, *, revision: int | None, generation: int | None, created: str | None
    ) -> Resource:
        return Resource(self.kind, self.name, self.spec, self.labels, revision, generation, created)

    def spec_dict(self) -> dict[str, Any]:
        return self.spec.model_dump(mode="json", by_alias=True, exclude_none=True)

    def same_content(self, other: Resource) -> bool:
        """True when a write of ``other`` over ``self`` would change nothing a reader sees."""
        return self.kind == other.kind and self.spec == other.spec and dict(self.labels) == dict(other.labels)

    def to_document(self) -> dict[str, Any]:
        """The full document, as stored and as sent between control planes."""
        metadata: dict[str, Any] = {"name": self.name}
        if self.labels:
            metadata["labels"] = dict(sorted(self.labels.items()))
        if self.revision is not None:
            metadata["resourceVersion"] = str(self.revision)
        if self.generation is not None:
            metadata["generation"] = self.generation
        if self.created is not None:
            metadata["creationTimestamp"] = self.created
        return {
            "apiVersion": API_VERSION,
            "kind": self.kind,
            "metadata": metadata,
            "spec": self.spec_dict(),
        }
