"""What each audience may see of a resource."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from meshgate.resources.kinds import REGISTRY
from meshgate.resources.model import Resource


def api_document(resource: Resource) -> dict[str, Any]:
    """For API readers: redacted fields removed, with a digest of each value in ``status``
    so an operator can tell whether a secret changed without ever reading it back."""
    doc = resource.to_document()
    redacted = REGISTRY[resource.kind].redacted_fields
    digests: dict[str, Any] = {}
    for field in redacted:
        value = doc["spec"].pop(field, None)
        if isinstance(value, dict):
            digests[field] = {k: _digest(v) for k, v in sorted(value.items())}
        elif value is not None:
            digests[field] = _digest(value)
    if digests:
        doc["status"] = {"redacted": digests}
    return doc


def sync_document(resource: Resource) -> dict[str, Any]:
    """For zones: everything but the fields that never leave the global CP."""
    doc = resource.to_document()
    for field in REGISTRY[resource.kind].private_fields:
        doc["spec"].pop(field, None)
    return doc


def _digest(value: Any) -> str:
    data = value.encode() if isinstance(value, str) else json.dumps(value, sort_keys=True).encode()
    return "sha256:" + hashlib.sha256(data).hexdigest()
