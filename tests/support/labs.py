"""Helpers for tests of labs run by ``meshgate lab``: the CLI, a lab's state, and the check that
nothing of a lab remains after ``down``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from meshgate.lab import state as lab_state
from meshgate.lab.state import LabState
from meshgate.netns import list_namespaces, process_alive

REPO = Path(__file__).resolve().parents[2]


def meshgate(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meshgate", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        check=False,
    )


def read_state(directory: Path) -> LabState:
    paths = lab_state.find_state_files(directory)
    assert len(paths) == 1, paths
    return lab_state.read(paths[0])


def recorded_pids(state: LabState) -> dict[int, int | None]:
    records = [state.supervisor] + [r for node in state.nodes.values() for r in (node.init, node.cmd)]
    return {record.pid: record.start for record in records if record is not None}


def assert_nothing_left(state: LabState) -> None:
    """No namespace, veth, process, mount or state file of the lab remains."""
    namespaces = set(state.namespaces)
    assert namespaces.isdisjoint(list_namespaces())
    alive = [pid for pid, start in recorded_pids(state).items() if process_alive(pid, start)]
    assert alive == []
    mountinfo = Path("/proc/self/mountinfo").read_text()
    assert state.directory not in mountinfo
    assert [name for name in namespaces if name in mountinfo] == []
    root_links = {
        link["ifname"]
        for link in json.loads(
            subprocess.run(["ip", "-j", "link"], capture_output=True, text=True, check=True).stdout
        )
    }
    ours = {node.mgmt_port for node in state.plan.nodes.values()} | {
        p for link in state.plan.links for p in link.parked
    }
    assert root_links.isdisjoint(ours)
    assert not state.path.exists()
    assert not state.copy_path.exists()
