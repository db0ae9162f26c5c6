"""Small helpers that turn a document into table cells."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Doc = Mapping[str, Any]


def spec_field(*path: str, default: str = "") -> Callable[[Doc], str]:
    def value(doc: Doc) -> str:
        node: Any = doc.get("spec", {})
        for part in path:
            if not isinstance(node, Mapping) or part not in node:
                return default
            node = node[part]
        if isinstance(node, list):
            return ",".join(str(x) for x in node)
        if isinstance(node, bool):
            return "yes" if node else "no"
        return str(node)

    return value


def count(*path: str) -> Callable[[Doc], str]:
    def value(doc: Doc) -> str:
        node: Any = doc.get("spec", {})
        for part in path:
            node = node.get(part, []) if isinstance(node, Mapping) else []
        return str(len(node)) if isinstance(node, list | dict) else "0"

    return value
