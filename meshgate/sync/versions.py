"""Content versions: the same resource has the same version wherever it is stored."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from meshgate.resources.model import Resource
from meshgate.resources.views import sync_document


def key_of(kind: str, name: str) -> str:
    return f"{kind}/{name}"


def split_key(key: str) -> tuple[str, str]:
    kind, sep, name = key.partition("/")
    if not sep or not kind or not name:
        raise ValueError(f"malformed resource key {key!r}")
    return kind, name


def content_version(doc: dict[str, Any]) -> str:
    """Hash of what a reader sees of a synced document: kind, name, labels, spec."""
    meta = doc.get("metadata", {})
    content = {
        "kind": doc.get("kind"),
        "name": meta.get("name"),
        "labels": meta.get("labels", {}),
        "spec": doc.get("spec"),
    }
    encoded = json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()[:24]


def resource_version(resource: Resource) -> str:
    """The version of what a sink receives of ``resource``: private fields never count, so a
    zone holding the document without them computes the same version as the global CP."""
    return content_version(sync_document(resource))
