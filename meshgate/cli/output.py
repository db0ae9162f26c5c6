"""Rendering documents for people (table, describe) and for programs (yaml, json)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from meshgate.resources.registry import KindDescriptor


def _console() -> Console:
    # Never wrap or truncate: output is often piped into grep and awk.
    return Console(soft_wrap=True, width=10_000, highlight=False)


def to_yaml(docs: Sequence[dict[str, Any]]) -> str:
    return "---\n".join(yaml.safe_dump(d, sort_keys=False, default_flow_style=False) for d in docs)


def to_json(value: Any) -> str:
    return json.dumps(value, indent=2)


def age(timestamp: str | None, now: datetime | None = None) -> str:
    if not timestamp:
        return ""
    then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    seconds = int(((now or datetime.now(UTC)) - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def table(descriptor: KindDescriptor, docs: Sequence[dict[str, Any]]) -> str:
    grid = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    grid.add_column("NAME", no_wrap=True)
    for column in descriptor.columns:
        grid.add_column(column.header, no_wrap=True)
    grid.add_column("AGE", no_wrap=True)
    for doc in docs:
        cells = [doc["metadata"]["name"], *(c.value(doc) for c in descriptor.columns)]
        grid.add_row(*cells, age(doc["metadata"].get("creationTimestamp")))
    console = _console()
    with console.capture() as captured:
        console.print(grid)
    return "\n".join(line.rstrip() for line in captured.get().splitlines())


def describe(
    doc: dict[str, Any], references: Sequence[tuple[str, bool]], referenced_by: Sequence[str]
) -> str:
    meta = doc["metadata"]
    lines = [
        f"Name:          {meta['name']}",
        f"Kind:          {doc['kind']}",
        f"Labels:        {', '.join(f'{k}={v}' for k, v in meta.get('labels', {}).items()) or '<none>'}",
        f"Version:       {meta.get('resourceVersion', '')} (generation {meta.get('generation', '')})",
        f"Created:       {meta.get('creationTimestamp', '')}",
        "Spec:",
        *("  " + line for line in yaml.safe_dump(doc["spec"], sort_keys=False).splitlines()),
    ]
    if doc.get("status"):
        lines += [
            "Status:",
            *("  " + ln for ln in yaml.safe_dump(doc["status"], sort_keys=False).splitlines()),
        ]
    lines.append("References:" if references else "References:    <none>")
    lines += [f"  {ref}{'' if ok else '  (MISSING)'}" for ref, ok in references]
    lines.append("Referenced by:" if referenced_by else "Referenced by: <none>")
    lines += [f"  {ref}" for ref in referenced_by]
    return "\n".join(lines)
