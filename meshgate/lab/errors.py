"""What the lab runner refuses or fails with."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Violation:
    """One thing wrong with a topology file, at a field path (``topology.nodes.a.binds[1]``)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class LabError(Exception):
    """Base of every lab error."""


class TopologyInvalid(LabError):
    """The topology file was refused; ``violations`` lists every problem found."""

    def __init__(self, file: str, violations: Sequence[Violation]) -> None:
        self.file = file
        self.violations = list(violations)
        lines = "\n".join(f"  {violation}" for violation in self.violations)
        super().__init__(f"{file}: {len(self.violations)} problem(s):\n{lines}")


class LabAlreadyUp(LabError):
    """``up`` of a lab whose earlier ``up`` was not brought down."""


class LabNotRunning(LabError):
    """No running lab for a directory (or no such node in it)."""


class LabUpFailed(LabError):
    """``up`` did not reach a ready lab: a node, the stage or check that failed, and why."""

    def __init__(self, message: str, *, node: str | None = None, detail: str = "") -> None:
        self.node = node
        self.detail = detail
        super().__init__(message + (f"\n{detail}" if detail else ""))
