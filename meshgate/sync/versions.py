"""Content versions: the same resource has the same version wherever it is stored.

Pure functions (no resource model): proxies use them without the validation stack."""

from __future__ import annotations

import hashlib
import json
from typing import Any


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
