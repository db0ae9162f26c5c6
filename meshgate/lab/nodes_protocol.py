"""What checks and traces need from a running lab: its nodes, a command run inside one, and the
network namespace of one.

``meshgate.lab.running.RunningLab`` provides this; tests provide it over plain namespaces. The
parameters are positional-only so that an implementation may name them as it likes.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from typing import Protocol


class LabNode(Protocol):
    """One node of a running lab."""

    @property
    def netns(self) -> str:
        """A name usable with ``ip netns exec NAME ...``."""
        ...

    @property
    def labels(self) -> Mapping[str, str]:
        """The node's labels from the topology (``role: edge``...)."""
        ...


class LabNodes(Protocol):
    """A running lab, as checks and traces use it."""

    @property
    def nodes(self) -> Mapping[str, LabNode]:
        """Node name -> node."""
        ...

    def netns(self, node: str, /) -> str:
        """The network namespace of ``node`` (for ``ip netns exec``)."""
        ...

    def exec(
        self, node: str, argv: list[str], /, *, timeout: float = 30, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside ``node`` (its network and mount namespaces) and wait for it; never
        raises on a non-zero exit (``subprocess.TimeoutExpired`` after ``timeout`` seconds)."""
        ...
