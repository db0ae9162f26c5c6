"""The state file of a running lab: ``/run/meshgate-lab/<name>-<hash of DIR>.json`` (and a copy
in ``DIR/clab-<name>/state.json``), written whole and atomically.

``up`` creates it (refusing when it exists: the lab is up), the supervisor keeps it current
(stages, PIDs with their start times, exit codes, health), ``status``, ``exec`` and
``RunningLab`` read it, and ``down`` tears down what it names, then removes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from meshgate.lab import codec
from meshgate.lab.plan import Plan
from meshgate.netns.namespace import process_alive, process_start_time

STATE_DIR: Final = Path("/run/meshgate-lab")
VERSION: Final = 1


@dataclass
class ProcessRecord:
    """A process by PID and start time (clock ticks after boot, /proc/PID/stat): a PID reused
    by another process never matches."""

    pid: int
    start: int | None

    @classmethod
    def of(cls, pid: int) -> ProcessRecord:
        return cls(pid, process_start_time(pid))

    @property
    def alive(self) -> bool:
        return self.start is not None and process_alive(self.pid, self.start)


@dataclass
class NodeState:
    #: pending, waiting, create, create-links, configure, exec, healthcheck, ready, exit, failed
    stage: str = "pending"
    detail: str = ""
    init: ProcessRecord | None = None
    cmd: ProcessRecord | None = None
    #: "" (no cmd), starting, running, restarting, exited, stopped (by kill_node)
    cmd_state: str = ""
    exit_code: int | None = None
    restarts: int = 0
    #: "" (no healthcheck), starting, healthy, unhealthy
    health: str = ""
    health_output: str = ""


@dataclass
class Failure:
    node: str
    stage: str
    message: str
    output: str = ""


@dataclass
class LabState:
    name: str
    directory: str
    run_id: str
    plan: Plan
    python: str
    code_root: str
    created: float = field(default_factory=time.time)
    version: int = VERSION
    #: starting (up wrote it), deploying, ready, failed, stopping
    phase: str = "starting"
    supervisor: ProcessRecord | None = None
    failure: Failure | None = None
    nodes: dict[str, NodeState] = field(default_factory=dict)
    updated: float = field(default_factory=time.time)

    @property
    def namespaces(self) -> list[str]:
        return [self.plan.lab_netns, *(node.netns for node in self.plan.nodes.values())]

    @property
    def path(self) -> Path:
        return state_path(self.name, Path(self.directory))

    @property
    def copy_path(self) -> Path:
        return Path(self.plan.lab_dir) / "state.json"


def directory_key(lab_dir: Path) -> str:
    return hashlib.sha256(str(Path(lab_dir).resolve()).encode()).hexdigest()[:12]


def state_path(name: str, lab_dir: Path) -> Path:
    return STATE_DIR / f"{name}-{directory_key(lab_dir)}.json"


def control_dir(path: Path) -> Path:
    """Requests to the supervisor (``<node>.stop``, ``<node>.start``)."""
    return path.with_suffix(".control")


def find_state_files(lab_dir: Path) -> list[Path]:
    """State files of labs brought up from ``lab_dir`` (normally one)."""
    return sorted(STATE_DIR.glob(f"*-{directory_key(lab_dir)}.json")) if STATE_DIR.is_dir() else []


def to_json(state: LabState) -> str:
    return json.dumps(codec.dump(state), indent=1) + "\n"


def read(path: Path) -> LabState:
    data: Any = json.loads(path.read_text())
    return codec.load(LabState, data)


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(3)}")
    temporary.write_text(text)
    os.replace(temporary, path)


def write(state: LabState) -> None:
    state.updated = time.time()
    text = to_json(state)
    _atomic_write(state.path, text)
    with contextlib.suppress(OSError):
        _atomic_write(state.copy_path, text)


def claim(state: LabState) -> bool:
    """Write the state file unless one exists (atomically: two ``up`` never both win)."""
    STATE_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    temporary = STATE_DIR / f".claim.{os.getpid()}.{secrets.token_hex(4)}"
    temporary.write_text(to_json(state))
    try:
        os.link(temporary, state.path)
    except FileExistsError:
        return False
    finally:
        temporary.unlink()
    with contextlib.suppress(OSError):
        _atomic_write(state.copy_path, to_json(state))
    return True


def remove(state: LabState) -> None:
    state.path.unlink(missing_ok=True)
    state.copy_path.unlink(missing_ok=True)
    directory = control_dir(state.path)
    if directory.is_dir():
        for request in directory.iterdir():
            request.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            directory.rmdir()
