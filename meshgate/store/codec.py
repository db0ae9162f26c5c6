"""Stored form of a resource: compact JSON of its document, without the revision."""

from __future__ import annotations

import json
from typing import Any

from meshgate.resources.kinds import REGISTRY
from meshgate.resources.model import Resource
from meshgate.store.errors import StoreError


def encode(resource: Resource) -> bytes:
    doc = resource.with_store_fields(
        revision=None, generation=resource.generation, created=resource.created
    ).to_document()
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def decode(data: bytes | str, revision: int) -> Resource:
    doc: dict[str, Any] = json.loads(data)
    descriptor = REGISTRY.get(doc.get("kind", ""))
    if descriptor is None:
        raise StoreError(f"stored resource of unknown kind {doc.get('kind')!r}")
    meta = doc["metadata"]
    return Resource(
        kind=descriptor.kind,
        name=meta["name"],
        spec=descriptor.spec_type.model_validate(doc["spec"], strict=False),
        labels=meta.get("labels", {}),
        revision=revision,
        generation=meta.get("generation"),
        created=meta.get("creationTimestamp"),
    )
