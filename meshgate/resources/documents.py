"""Reading resource files: multi-document YAML or JSON, strictly.

YAML here means the safe subset read the YAML 1.2 way where 1.1 surprises operators:
only ``true``/``false`` are booleans (``no`` stays a string), timestamps stay strings,
and a key repeated within one mapping is an error rather than silently overwritten.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from meshgate.resources.violations import ValidationFailed, Violation


class _StrictLoader(yaml.SafeLoader):
    pass


_StrictLoader.yaml_implicit_resolvers = {
    first: [
        (tag, rx)
        for tag, rx in resolvers
        if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:timestamp")
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: dict[Any, yaml.Node] = {}
    for key_node, _value in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (line {mark.line + 1})", mark
            )
        seen[key] = key_node
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_text(text: str) -> list[Any]:
    """Documents in ``text``: a JSON value (object, or array/``List`` of objects) or YAML.

    Raises ValidationFailed naming the line and column of a syntax error.
    """
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValidationFailed(
                [Violation("", f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}")]
            ) from None
        return _unwrap(value)
    try:
        docs = list(yaml.load_all(text, Loader=_StrictLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ValidationFailed([Violation("", f"invalid YAML at {where}{problem}")]) from None
    out: list[Any] = []
    for doc in docs:
        if doc is not None:  # empty documents between '---' are allowed
            out.extend(_unwrap(doc))
    return out


def _unwrap(value: Any) -> list[Any]:
    """A ``kind: List`` (or a bare JSON array) holds its documents in ``items``."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict) and value.get("kind") == "List" and isinstance(value.get("items"), list):
        return list(value["items"])
    return [value]
