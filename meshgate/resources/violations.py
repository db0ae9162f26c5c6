"""Violations: one problem in one document, named by its field path."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def format_path(loc: Iterable[str | int]) -> str:
    """Render a location as ``spec.ports[1].protocol`` or ``spec.data["tls.crt"]``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f'["{part}"]'
    return out


@dataclass(frozen=True, slots=True)
class Violation:
    """One thing wrong with one document: where, and what."""

    path: str
    message: str
    document: int | None = None  # index of the document in the file or request, if any
    kind: str | None = None
    name: str | None = None

    def located(self, document: int | None, kind: str | None, name: str | None) -> Violation:
        return Violation(self.path, self.message, document, kind, name)

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"path": self.path, "message": self.message}
        if self.document is not None:
            out["document"] = self.document
        if self.kind is not None:
            out["kind"] = self.kind
        if self.name is not None:
            out["name"] = self.name
        return out

    def __str__(self) -> str:
        where = ""
        if self.document is not None:
            where = f"document {self.document}"
            if self.kind:
                where += f" ({self.kind}/{self.name or '?'})"
            where += ": "
        return f"{where}{self.path}: {self.message}" if self.path else f"{where}{self.message}"


@dataclass
class ValidationFailed(Exception):
    """Raised with every violation found; nothing was stored."""

    violations: Sequence[Violation] = field(default_factory=list)

    def __str__(self) -> str:
        return "\n".join(str(v) for v in self.violations)
