"""labs/two-region as an operator runs it (root): ``meshgate lab up``, ``check``, ``trace``, every
failure scenario under load (the drain also with flows pinned), ``down`` leaving nothing.

The lab is brought up once for the module from a copy in a temporary directory (so it never
meets a lab a developer has up from the checkout): a global CP, and per region a BIRD or FRR
router, an edge with ExaBGP, a zone CP, an ingress, two workload hosts and a client: 15 nodes,
about 50 processes.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from meshgate.lab.running import RunningLab
from meshgate.lab.state import LabState
from tests.support.labs import REPO, assert_nothing_left, meshgate, read_state
from tests.support.netns import require_root

pytestmark = [pytest.mark.root, pytest.mark.slow]

VIP = "203.0.113.10"
SCENARIOS = ("edge-failure", "edge-drain", "zone-failure", "zone-cp-down", "global-cp-down", "partition")


@dataclass
class Lab:
    directory: Path
    state: LabState
    up_seconds: float


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    require_root()
    directory = tmp_path_factory.mktemp("labs") / "two-region"
    shutil.copytree(REPO / "labs" / "two-region", directory, ignore=shutil.ignore_patterns("clab-*"))
    started = time.monotonic()
    done = meshgate("lab", "up", str(directory), timeout=400)
    took = time.monotonic() - started
    try:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        print(f"\n[two-region] lab up: {took:.1f}s")
        yield Lab(directory, read_state(directory), took)
    finally:
        meshgate("lab", "down", str(directory), timeout=120)


def test_up_brings_every_node_up_healthy(lab: Lab) -> None:
    done = meshgate("lab", "status", str(lab.directory), "-o", "json")
    assert done.returncode == 0, done.stderr
    nodes = {node["name"]: node for node in json.loads(done.stdout)["nodes"]}
    assert len(nodes) == 15
    clients = {"client-eu", "client-us"}  # no cmd: their namespaces and exec'd addresses only
    assert {n["state"] for name, n in nodes.items() if name not in clients} == {"running"}, nodes
    assert {n["restarts"] for n in nodes.values()} == {0}, nodes
    with_checks = {name for name, n in nodes.items() if not name.startswith(("client-", "rtr-"))}
    assert {nodes[name]["health"] for name in with_checks} == {"healthy"}, nodes


def test_checks_pass(lab: Lab) -> None:
    done = meshgate("lab", "check", str(lab.directory), "-o", "json", timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    checks = json.loads(done.stdout)["checks"]
    assert len(checks) == 8
    assert [c["name"] for c in checks if not c["passed"]] == [], checks


def test_a_trace_shows_each_regions_clients_reaching_their_own_edge(lab: Lab) -> None:
    for client, edge in (("client-eu", "edge-eu"), ("client-us", "edge-us")):
        done = meshgate(
            "lab", "trace", str(lab.directory), "--from", client, "--to", VIP, "--count", "5",
            "--interval", "50ms", "--via", "edge-eu", "--via", "edge-us", "-o", "json", timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        trace = json.loads(done.stdout)
        assert trace["counts"] == {edge: 5}, trace
        assert trace["lost"] == [], trace


def test_the_operator_commands_work_inside_the_nodes(lab: Lab) -> None:
    """What ``meshgate demo --lab`` suggests: the CLI on the global node, each router's view."""
    zones = meshgate(
        "lab", "exec", str(lab.directory), "global", "--", "meshgate", "get", "zones", "-o", "json"
    )
    assert zones.returncode == 0, zones.stderr
    found = json.loads(zones.stdout)
    items = found["items"] if isinstance(found, dict) else found
    assert sorted(z["metadata"]["name"] for z in items) == ["eu-west", "us-east"]
    edges = meshgate("lab", "exec", str(lab.directory), "global", "--", "meshgate", "edge", "status")
    assert edges.returncode == 0, edges.stderr
    assert "edge-eu" in edges.stdout
    assert "edge-us" in edges.stdout
    bird = meshgate(
        "lab", "exec", str(lab.directory), "rtr-eu", "--", "birdc", "-s", "/run/bird/bird.ctl",
        "show", "route", "for", VIP, "all",
    )  # fmt: skip
    assert bird.returncode == 0, bird.stderr
    assert "AS65101" in bird.stdout or "65101" in bird.stdout, bird.stdout
    frr = meshgate(
        "lab", "exec", str(lab.directory), "rtr-us", "--", "vtysh", "--vty_socket", "/run/frr",
        "-c", f"show ip bgp {VIP}/32",
    )  # fmt: skip
    assert frr.returncode == 0, frr.stderr
    assert "65102" in frr.stdout, frr.stdout


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario(lab: Lab, name: str) -> None:
    done = meshgate("lab", "scenario", str(lab.directory), name, "-o", "json", timeout=300)
    print(f"\n[two-region] {done.stdout.strip()}")
    assert done.returncode == 0, done.stdout + done.stderr
    (result,) = json.loads(done.stdout)
    assert result["passed"], result
    assert result["ledger"] == "holds"
    assert result["sent"] > 100


def test_the_drain_with_flows_pinned_fails_no_request(lab: Lab) -> None:
    done = meshgate("lab", "scenario", str(lab.directory), "edge-drain", "--pin", "-o", "json", timeout=300)
    print(f"\n[two-region] {done.stdout.strip()}")
    assert done.returncode == 0, done.stdout + done.stderr
    (result,) = json.loads(done.stdout)
    assert result["pinned"], result
    assert result["failed"] == 0, result


def test_down_leaves_nothing_behind(lab: Lab) -> None:
    running = RunningLab.find(lab.directory)
    assert running.nodes  # still up before down
    done = meshgate("lab", "down", str(lab.directory), timeout=120)
    assert done.returncode == 0, done.stderr
    assert_nothing_left(lab.state)
    again = meshgate("lab", "down", str(lab.directory), timeout=60)
    assert again.returncode == 0, again.stderr
