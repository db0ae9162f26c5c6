"""``up``'s progress: a live table per node (rich, on a terminal) or one plain line per change
(``  router: create-links``), from the state the supervisor writes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TextIO

from meshgate.lab.state import LabState


def _line(node: str, stage: str, detail: str, health: str) -> str:
    text = f"{node}: {stage}"
    if detail:
        text += f" ({detail})"
    if health and stage in ("healthcheck", "ready"):
        text += f" [{health}]"
    return text


class PlainProgress:
    """One line each time a node changes stage or health."""

    def __init__(self, write: Callable[[str], None]) -> None:
        self.write = write
        self.seen: dict[str, str] = {}
        self.phase = ""

    def __call__(self, state: LabState) -> None:
        if state.phase != self.phase and state.phase in ("deploying",):
            self.write(f"lab {state.name}: deploying {len(state.plan.nodes)} nodes (run {state.run_id})")
        self.phase = state.phase
        for name, node in state.nodes.items():
            line = _line(name, node.stage, node.detail, node.health)
            if self.seen.get(name) != line and node.stage != "pending":
                self.seen[name] = line
                self.write(f"  {line}")

    def close(self) -> None:
        pass


class RichProgress:
    """A live table: node, stage, health, process."""

    def __init__(self, stream: TextIO) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console(file=stream)
        self.live = Live(console=self.console, refresh_per_second=10, transient=False)
        self.live.start()

    def __call__(self, state: LabState) -> None:
        from rich.table import Table

        table = Table(title=f"lab {state.name} ({state.phase})", box=None, header_style="bold")
        for column in ("NODE", "STAGE", "HEALTH", "CMD"):
            table.add_column(column, no_wrap=True)
        for name, node in state.nodes.items():
            stage = node.stage + (f" ({node.detail})" if node.detail else "")
            style = {"ready": "green", "failed": "red", "waiting": "yellow"}.get(node.stage, "")
            table.add_row(
                name, f"[{style}]{stage}[/]" if style else stage, node.health or "-", node.cmd_state or "-"
            )
        self.live.update(table)

    def close(self) -> None:
        self.live.stop()


def make_progress(stream: TextIO, write: Callable[[str], None]) -> Any:
    """Rich when ``stream`` is a terminal, plain lines otherwise."""
    return RichProgress(stream) if stream.isatty() else PlainProgress(write)
