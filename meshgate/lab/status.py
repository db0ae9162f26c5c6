"""What ``status`` shows of a lab: per node its namespace, management address, processes, health
and stage, from the state file checked against the machine (a PID is only counted as running
when its start time still matches)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from meshgate.lab.state import LabState, NodeState
from meshgate.netns.namespace import NETNS_DIR


@dataclass(frozen=True)
class NodeStatus:
    name: str
    netns: str
    mgmt_ipv4: str | None
    pid: int | None
    cmd_pid: int | None
    #: running, exited (code N), restarting, stopped, created (no cmd: only its namespaces), down
    state: str
    health: str
    stage: str
    restarts: int
    labels: dict[str, str]


def node_status(lab: LabState, name: str) -> NodeStatus:
    plan = lab.plan.nodes[name]
    node = lab.nodes.get(name, NodeState())
    init_alive = node.init is not None and node.init.alive and (NETNS_DIR / plan.netns).exists()
    cmd_alive = node.cmd is not None and node.cmd.alive
    if not init_alive:
        state = "down"
    elif not plan.cmd:
        state = "stopped" if node.cmd_state == "stopped" else "running"
    elif cmd_alive:
        state = "running"
    elif node.cmd_state == "restarting":
        state = "restarting"
    elif node.cmd_state in ("exited", "stopped"):
        state = f"{node.cmd_state} ({node.exit_code})"
    elif node.cmd_state == "running":
        state = "exited (supervisor not running)"
    else:
        state = node.cmd_state or "created"
    stage = node.stage + (f": {node.detail}" if node.detail else "")
    return NodeStatus(
        name=name, netns=plan.netns, mgmt_ipv4=plan.mgmt_ipv4, pid=node.init.pid if node.init else None,
        cmd_pid=node.cmd.pid if node.cmd else None, state=state, health=node.health or "-", stage=stage,
        restarts=node.restarts, labels=dict(plan.labels),
    )  # fmt: skip


def lab_status(lab: LabState) -> dict[str, Any]:
    supervisor = lab.supervisor
    return {
        "name": lab.name,
        "directory": lab.directory,
        "run_id": lab.run_id,
        "phase": lab.phase,
        "supervisor": {"pid": supervisor.pid, "running": supervisor.alive} if supervisor else None,
        "failure": asdict(lab.failure) if lab.failure else None,
        "lab_netns": lab.plan.lab_netns,
        "mgmt": {"subnet": lab.plan.mgmt_subnet, "gateway": lab.plan.mgmt_gateway, "bridge": lab.plan.bridge},
        "nodes": [asdict(node_status(lab, name)) for name in lab.plan.nodes],
    }
