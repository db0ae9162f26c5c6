"""``down``: remove everything a lab's state file names, whatever state its supervisor (or an
interrupted ``up``) left it in.

1. the supervisor, by recorded PID and start time: SIGTERM (it stops its processes), then SIGKILL;
2. every process in the lab's namespaces (``ip netns pids``, which also finds daemons that left
   their process group) and every recorded PID still alive with its recorded start time, and the
   process groups of recorded cmds: SIGTERM, a deadline, SIGKILL;
3. the namespaces (their veth pairs go with them; mounts lived in the nodes' own mount
   namespaces, which end with their last process);
4. the state files.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from meshgate.lab import state as lab_state
from meshgate.lab.errors import LabError
from meshgate.lab.state import LabState, ProcessRecord
from meshgate.netns.namespace import NETNS_DIR, Namespace, terminate, wait_until

SUPERVISOR_DEADLINE: Final = 8.0
PROCESS_DEADLINE: Final = 3.0


@dataclass
class Teardown:
    lab: str
    processes: int = 0
    namespaces: list[str] = field(default_factory=list)


def _alive(records: Iterable[ProcessRecord | None]) -> list[ProcessRecord]:
    return [record for record in records if record is not None and record.alive]


def recorded_processes(state: LabState) -> list[ProcessRecord]:
    records: list[ProcessRecord | None] = [state.supervisor]
    for node in state.nodes.values():
        records += [node.init, node.cmd]
    return [record for record in records if record is not None]


def stale_copies(lab_dir: Path) -> list[Path]:
    """State copies in ``DIR/clab-*/`` whose /run file is gone but whose namespaces or
    processes are not."""
    found = []
    for copy in sorted(Path(lab_dir).glob("clab-*/state.json")):
        try:
            state = lab_state.read(copy)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if not state.path.exists() and is_present(state):
            found.append(copy)
    return found


def is_present(state: LabState) -> bool:
    """Whether anything of the lab is still on the machine."""
    return any((NETNS_DIR / name).exists() for name in state.namespaces) or bool(
        _alive(recorded_processes(state))
    )


def teardown(state: LabState) -> Teardown:
    report = Teardown(state.name)
    supervisor = state.supervisor
    if supervisor is not None and supervisor.alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(supervisor.pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: not supervisor.alive, SUPERVISOR_DEADLINE, interval=0.02)
        if supervisor.alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(supervisor.pid, signal.SIGKILL)
        report.processes += 1
    alive = _alive(recorded_processes(state))
    groups = [node.cmd.pid for node in state.nodes.values() if node.cmd is not None and node.cmd.alive]
    in_namespaces = [
        pid for name in state.namespaces if (NETNS_DIR / name).exists() for pid in Namespace(name).pids()
    ]
    pids = sorted({record.pid for record in alive} | set(in_namespaces))
    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGTERM)
    if pids:
        terminate(pids, deadline=PROCESS_DEADLINE)
        report.processes += len(pids)
    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)
    for name in state.namespaces:
        if (NETNS_DIR / name).exists():
            Namespace(name).delete(deadline=PROCESS_DEADLINE)
            report.namespaces.append(name)
    leftovers = [name for name in state.namespaces if (NETNS_DIR / name).exists()]
    leftovers += [f"PID {record.pid}" for record in _alive(recorded_processes(state))]
    if leftovers:
        raise LabError(f"lab {state.name}: still present after down: {', '.join(leftovers)}")
    lab_state.remove(state)
    return report
