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


def each(field: str, template: str, **when: str) -> Callable[[Doc], str]:
    """Items of the list ``spec.<field>`` formatted with ``template`` (``{port}/{protocol}``),
    joined by commas; only those whose keys equal ``when`` if given."""

    def value(doc: Doc) -> str:
        items = doc.get("spec", {}).get(field, [])
        chosen = [i for i in items if all(i.get(k) == v for k, v in when.items())]
        return ",".join(template.format(**i) for i in chosen)

    return value


def fraction(field: str, key: str, wanted: str) -> Callable[[Doc], str]:
    """``3/4``: items of ``spec.<field>`` whose ``key`` equals ``wanted``, out of all."""

    def value(doc: Doc) -> str:
        items = doc.get("spec", {}).get(field, [])
        return f"{sum(1 for i in items if i.get(key) == wanted)}/{len(items)}"

    return value


def status_field(*path: str, default: str = "", limit: int = 60) -> Callable[[Doc], str]:
    """A value from the server-computed ``status`` of a document (clipped to ``limit``)."""

    def value(doc: Doc) -> str:
        node: Any = doc.get("status", {})
        for part in path:
            if not isinstance(node, Mapping) or node.get(part) is None:
                return default
            node = node[part]
        if isinstance(node, bool):
            return "yes" if node else "no"
        text = str(node)
        return text if len(text) <= limit else text[: limit - 1] + "…"

    return value
