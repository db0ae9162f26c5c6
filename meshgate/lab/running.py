"""A lab that ``up`` brought up, found from its directory: its nodes, and commands run in them.

lab = RunningLab.find(Path("labs/two-region"))
lab.exec("client-eu", ["curl", "-s", "http://203.0.113.10/"]).stdout
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from meshgate.lab import state as lab_state
from meshgate.lab.errors import LabError, LabNotRunning
from meshgate.lab.node_process import node_env, run_in_node
from meshgate.lab.state import LabState, NodeState, ProcessRecord
from meshgate.netns.namespace import NETNS_DIR, wait_until

REQUEST_DEADLINE = 15.0


@dataclass(frozen=True)
class RunningNode:
    """One node of a running lab."""

    name: str
    #: its network namespace (``ip netns exec NAME ...`` works, without the node's mounts)
    netns: str
    #: its init process: ``nsenter --target PID --net --mount --uts --root --wd``
    pid: int
    labels: dict[str, str]
    mgmt_ipv4: str | None
    env: dict[str, str]
    kind: str
    image: str | None
    longname: str


def find_state(lab_dir: Path) -> LabState:
    """The state of the lab brought up from ``lab_dir``; ``LabNotRunning`` when there is none."""
    lab_dir = Path(lab_dir)
    paths = lab_state.find_state_files(lab_dir)
    if len(paths) > 1:
        from meshgate.lab.topology import read_topology

        name = read_topology(lab_dir).name
        paths = [path for path in paths if path.name.startswith(f"{name}-")] or paths[:1]
    if not paths:
        raise LabNotRunning(f"no lab is running from {lab_dir} (run: meshgate lab up {lab_dir})")
    try:
        return lab_state.read(paths[0])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LabNotRunning(f"cannot read the state of the lab in {lab_dir} ({paths[0]}): {exc}") from exc


class RunningLab:
    """A running lab: ``nodes``, ``exec`` inside one, its ``netns``."""

    def __init__(self, state: LabState) -> None:
        self.state = state
        self.name: str = state.name
        self.directory: Path = Path(state.directory)
        self.nodes: dict[str, RunningNode] = {}
        for name, node in state.plan.nodes.items():
            init = state.nodes.get(name, NodeState()).init
            self.nodes[name] = RunningNode(
                name=name, netns=node.netns, pid=init.pid if init else 0, labels=dict(node.labels),
                mgmt_ipv4=node.mgmt_ipv4, env=node_env(node.env, node.hostname, state.python, state.code_root),
                kind=node.kind, image=node.image, longname=node.longname,
            )  # fmt: skip

    @classmethod
    def find(cls, lab_dir: Path) -> RunningLab:
        return cls(find_state(lab_dir))

    def refresh(self) -> RunningLab:
        """The lab as its state file says now."""
        return RunningLab(lab_state.read(self.state.path))

    def node(self, node: str) -> RunningNode:
        try:
            return self.nodes[node]
        except KeyError:
            raise LabNotRunning(
                f"lab {self.name} has no node {node!r} (nodes: {', '.join(self.nodes)})"
            ) from None

    def netns(self, node: str) -> str:
        return self.node(node).netns

    def select(self, labels: Mapping[str, str]) -> list[RunningNode]:
        """The nodes carrying every one of ``labels`` (containerlab's ``--label key=value``)."""
        return [n for n in self.nodes.values() if all(n.labels.get(k) == v for k, v in labels.items())]

    def _alive_init(self, node: str) -> int:
        found = self.node(node)
        record = self.state.nodes.get(node, NodeState()).init
        if (
            record is None
            or not ProcessRecord(record.pid, record.start).alive
            or not (NETNS_DIR / found.netns).exists()
        ):
            raise LabNotRunning(f"node {node} of lab {self.name} is not running (its init process is gone)")
        return found.pid

    def exec(
        self, node: str, argv: Sequence[str], *, timeout: float = 30, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside ``node`` (network, mount and UTS namespaces, root, environment) and
        wait; output captured as text. Never raises on a non-zero exit;
        ``subprocess.TimeoutExpired`` after ``timeout`` seconds (the command is killed)."""
        pid = self._alive_init(node)
        return run_in_node(pid, argv, self.node(node).env, timeout=timeout, input=input)

    def popen_argv(self, node: str, argv: Sequence[str]) -> list[str]:
        """The command line that runs ``argv`` in ``node`` (with ``env=lab.node(n).env``)."""
        from meshgate.lab.node_process import nsenter

        return nsenter(self._alive_init(node), argv)

    # -- stopping and starting a node's processes (scenarios) ---------------------------------

    def _request(self, node: str, action: str, payload: str = "") -> None:
        self.node(node)
        supervisor = self.state.supervisor
        if supervisor is None or not supervisor.alive:
            raise LabError(
                f"the supervisor of lab {self.name} is not running: nodes cannot be stopped or started"
            )
        directory = lab_state.control_dir(self.state.path)
        directory.mkdir(exist_ok=True)
        (directory / f"{node}.{action}").write_text(payload)
        os.kill(supervisor.pid, signal.SIGUSR1)

    def _wait_cmd(self, node: str, states: tuple[str, ...], what: str) -> None:
        def reached() -> bool:
            current = lab_state.read(self.state.path).nodes[node]
            return current.cmd_state in states

        try:
            wait_until(reached, REQUEST_DEADLINE, interval=0.05, what=f"node {node}: {what}")
        except TimeoutError as exc:
            raise LabError(str(exc)) from None

    def kill_node(self, node: str, *, signal: int = signal.SIGKILL) -> None:
        """As ``docker kill --signal``: every process of the node gets ``signal`` and its
        ``cmd`` is not restarted (until ``start_node``); returns once the cmd has exited."""
        self._request(node, "stop", str(int(signal)))
        if self.state.plan.nodes[node].cmd:
            self._wait_cmd(
                node, ("stopped", "exited"), f"cmd still running {REQUEST_DEADLINE} s after signal {signal}"
            )

    def start_node(self, node: str) -> None:
        """Start a stopped node's ``cmd`` again; returns once it runs."""
        self._request(node, "start")
        if self.state.plan.nodes[node].cmd:
            self._wait_cmd(node, ("running",), "cmd not started")

    def wait_for(self, node: str, predicate_state: str, timeout: float = 30.0) -> float:
        """Seconds until ``node``'s health reads ``predicate_state`` (healthy...)."""
        start = time.monotonic()
        wait_until(
            lambda: lab_state.read(self.state.path).nodes[node].health == predicate_state, timeout, interval=0.05,
            what=f"node {node} not {predicate_state} within {timeout} s",
        )  # fmt: skip
        return time.monotonic() - start
