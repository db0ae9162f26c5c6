"""``up`` and ``down`` of a lab directory, for the CLI, tests and scenarios.

``up`` reads and plans the topology, records the run in a new state file (refused when the lab
is up), starts the detached supervisor, and follows its progress until every node is ready
(exec commands done, healthchecks healthy), a node fails, or the deadline passes. A lab that
failed is left up for inspection unless ``cleanup_on_failure``; ``down`` removes it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from meshgate.lab import state as lab_state
from meshgate.lab.errors import LabAlreadyUp, LabError, LabUpFailed
from meshgate.lab.node_process import code_root, python_env
from meshgate.lab.plan import plan as make_plan
from meshgate.lab.running import RunningLab
from meshgate.lab.state import LabState, NodeState
from meshgate.lab.teardown import Teardown, is_present, stale_copies, teardown
from meshgate.lab.topology import read_topology

DEFAULT_TIMEOUT: Final = 300.0
#: how long a supervisor may take to record itself before `up` gives up on it
SUPERVISOR_START: Final = 15.0
POLL: Final = 0.05
LOGS: Final = ("init.log", "stdout.log", "stderr.log", "exec.log")

Progress = Callable[[LabState], None]


def _refuse_if_up(state: LabState) -> None:
    for path in (state.path, state.copy_path):
        if not path.exists():
            continue
        try:
            existing = lab_state.read(path)
        except (OSError, ValueError, KeyError, TypeError):
            existing = None
        if existing is not None and is_present(existing):
            raise LabAlreadyUp(
                f"lab {state.name} is already up from {state.directory} (run {existing.run_id}, phase "
                f"{existing.phase}): run `meshgate lab down {state.directory}` first"
            )
        path.unlink(missing_ok=True)  # a leftover of a lab that is gone


def prepare(lab_dir: Path) -> LabState:
    """The new run's state (not yet written): topology read and planned (refused before
    anything needs root)."""
    topology = read_topology(lab_dir)
    plan = make_plan(topology, secrets.token_hex(3))
    if os.geteuid() != 0:
        raise LabError("meshgate lab up needs root (network namespaces)")
    return LabState(
        name=plan.name, directory=str(Path(lab_dir).resolve()), run_id=plan.run_id, plan=plan,
        python=sys.executable, code_root=code_root(), nodes={name: NodeState() for name in plan.nodes},
    )  # fmt: skip


def up(
    lab_dir: Path,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    cleanup_on_failure: bool = False,
    progress: Progress | None = None,
) -> RunningLab:
    """Bring the lab up and return it once ready; ``TopologyInvalid``, ``LabAlreadyUp`` or
    ``LabUpFailed`` (naming the node, the stage or check, and the output)."""
    state = prepare(lab_dir)
    _refuse_if_up(state)
    lab = Path(state.plan.lab_dir)
    lab.mkdir(parents=True, exist_ok=True)
    for node in state.plan.nodes.values():
        Path(node.node_dir).mkdir(exist_ok=True)
        for log in LOGS:
            (Path(node.node_dir) / log).unlink(missing_ok=True)
    if not lab_state.claim(state):
        raise LabAlreadyUp(f"lab {state.name} is being brought up from {state.directory} by another command")
    try:
        started = subprocess.run(
            [sys.executable, "-m", "meshgate.lab.supervisor", str(state.path)], env=python_env(),
            cwd="/", stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        if started.returncode != 0:
            raise LabUpFailed(
                f"lab {state.name}: the supervisor did not start", detail=started.stderr.strip()
            )
        return follow(Path(lab_dir), state, timeout=timeout, progress=progress)
    except LabUpFailed:
        if cleanup_on_failure:
            down(Path(lab_dir))
        raise


def follow(lab_dir: Path, initial: LabState, *, timeout: float, progress: Progress | None) -> RunningLab:
    start = time.monotonic()
    deadline = start + timeout
    last_update = 0.0
    state = initial
    while True:
        with contextlib.suppress(OSError, ValueError):
            state = lab_state.read(initial.path)
        if state.updated != last_update:
            last_update = state.updated
            if progress is not None:
                progress(state)
        if state.phase == "ready":
            return RunningLab(state)
        if state.phase == "failed":
            raise failure_error(state)
        supervisor = state.supervisor
        if (supervisor is None and time.monotonic() - start > SUPERVISOR_START) or (
            supervisor is not None and not supervisor.alive
        ):
            raise LabUpFailed(
                f"lab {state.name}: the supervisor died",
                detail=_tail(Path(state.plan.lab_dir) / "supervisor.log"),
            )
        if time.monotonic() > deadline:
            waiting = ", ".join(f"{name} ({node.stage}{': ' + node.detail if node.detail else ''})"
                                for name, node in state.nodes.items() if node.stage not in ("ready", "exited"))  # fmt: skip
            raise LabUpFailed(f"lab {state.name} not ready after {timeout:g} s: {waiting}")
        time.sleep(POLL)


def failure_error(state: LabState) -> LabUpFailed:
    failure = state.failure
    if failure is None:
        return LabUpFailed(f"lab {state.name} failed")
    parts = []
    if failure.output.strip():
        parts.append("output:\n" + _indent(failure.output.strip()))
    if failure.node:
        node_dir = Path(state.plan.nodes[failure.node].node_dir)
        for log in ("stderr.log", "stdout.log"):
            tail = _tail(node_dir / log)
            if tail:
                parts.append(f"{node_dir / log} (last lines):\n" + _indent(tail))
    where = f"node {failure.node}, stage {failure.stage}" if failure.node else failure.stage
    return LabUpFailed(
        f"lab {state.name}: {where}: {failure.message}", node=failure.node or None, detail="\n".join(parts)
    )


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def down(lab_dir: Path) -> list[Teardown]:
    """Tear down every run of the lab in ``lab_dir``: what was removed (empty when nothing was
    running). Works after the supervisor or ``up`` was killed; idempotent."""
    reports = []
    paths = lab_state.find_state_files(Path(lab_dir)) + stale_copies(Path(lab_dir))
    for path in paths:
        try:
            state = lab_state.read(path)
        except FileNotFoundError:
            continue
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise LabError(
                f"cannot read {path}: {exc} (remove it by hand once its namespaces are gone)"
            ) from exc
        reports.append(teardown(state))
    return reports
