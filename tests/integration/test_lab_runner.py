"""``meshgate lab up | status | exec | down`` on network namespaces (needs root).

tests/data/labs/three-node (host-a -- router -- host-b: BIRD on the router with a bound
configuration, an HTTP server on host-b behind a healthcheck, host-a created once host-b is
healthy) is brought up once for the module, from a copy in a temporary directory, and what a user
would notice is checked; then it is brought down and nothing of it may remain. Other tests bring
up small labs that must fail, and labs whose supervisor or ``up`` is SIGKILLed before ``down``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from meshgate.lab import state as lab_state
from meshgate.lab.running import RunningLab
from meshgate.netns import list_namespaces, process_alive, wait_until
from tests.support.labs import assert_nothing_left, meshgate, read_state
from tests.support.netns import require_root

pytestmark = [pytest.mark.root]

REPO = Path(__file__).resolve().parents[2]
LABS = REPO / "tests" / "data" / "labs"
DEADLINE = 60.0


def copy_lab(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    target = tmp_path_factory.mktemp("lab") / name
    shutil.copytree(LABS / name, target)
    return target


@dataclass
class Lab:
    directory: Path
    up: subprocess.CompletedProcess[str]
    seconds: float
    running: RunningLab


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    require_root()
    directory = copy_lab(tmp_path_factory, "three-node")
    start = time.monotonic()
    done = meshgate("lab", "up", str(directory))
    seconds = time.monotonic() - start
    try:
        assert done.returncode == 0, done.stdout + done.stderr
        yield Lab(directory, done, seconds, RunningLab.find(directory))
    finally:
        meshgate("lab", "down", str(directory))


def test_up_exits_0_and_shows_each_nodes_stages(lab: Lab) -> None:
    print(f"lab up: {lab.seconds:.2f} s")
    lines = lab.up.stdout.splitlines()
    # one line per stage a node is seen in (the state is polled: a quick stage may be skipped)
    for expected in (
        "  host-a: waiting (create after host-b healthy)",
        "  host-a: ready",
        "  router: ready [healthy]",
    ):
        assert expected in lines
    assert any(line.startswith("  router: create") for line in lines)
    assert lines[-1].startswith("lab mg-runner-test is up (3 nodes)")
    # host-a was created only once host-b was healthy (its create stage waits for it)
    host_a_created = next(
        i for i, line in enumerate(lines) if line.startswith("  host-a:") and "waiting" not in line
    )
    assert lines.index("  host-b: ready [healthy]") < host_a_created


def test_a_request_crosses_the_links_through_the_router(lab: Lab) -> None:
    done = lab.running.exec("host-a", ["curl", "-sf", "--max-time", "5", "http://10.10.2.2:8080/index.html"])
    assert (done.returncode, done.stdout) == (0, "hello from host-b\n")
    route = lab.running.exec("host-a", ["ip", "-j", "route", "get", "10.10.2.2"])
    assert json.loads(route.stdout)[0]["gateway"] == "10.10.1.1"
    links = json.loads(lab.running.exec("router", ["ip", "-j", "link"]).stdout)
    assert {link["ifname"] for link in links} == {"lo", "eth0", "eth1", "eth2"}


def test_lab_exec_runs_in_the_node_and_exits_with_the_commands_code(lab: Lab) -> None:
    done = meshgate(
        "lab",
        "exec",
        str(lab.directory),
        "host-b",
        "--",
        "sh",
        "-c",
        "hostname; echo $LAB $CLAB_LABEL_ROLE; exit 3",
    )
    assert (done.returncode, done.stdout) == (3, "host-b\nrunner-test server\n")
    by_label = meshgate(
        "lab",
        "exec",
        str(lab.directory),
        "--label",
        "role=router",
        "--",
        "cat",
        "/etc/meshgate-lab/bird.conf",
    )
    assert by_label.returncode == 0
    assert by_label.stdout == (lab.directory / "router" / "bird.conf").read_text()
    missing = meshgate("lab", "exec", str(lab.directory), "nobody", "--", "true")
    assert missing.returncode == 7
    assert "no node 'nobody'" in missing.stderr


def test_binds_are_visible_in_the_node_and_not_on_the_host(lab: Lab) -> None:
    running = lab.running
    assert not Path("/etc/meshgate-lab").exists()
    write = running.exec("router", ["sh", "-c", "echo x >> /etc/meshgate-lab/bird.conf"])
    assert write.returncode != 0
    assert "Read-only file system" in write.stderr
    # __clabNodeDir__ is the node's directory of the lab: its logs, and what the node writes there
    assert "stdout.log" in running.exec("router", ["ls", "/var/lib/node"]).stdout.split()
    assert running.exec("router", ["sh", "-c", "echo from-router > /var/lib/node/note"]).returncode == 0
    assert (lab.directory / "clab-mg-runner-test" / "router" / "note").read_text() == "from-router\n"
    assert not Path("/var/lib/node").exists()


def test_run_and_tmp_are_private_to_each_node(lab: Lab) -> None:
    running = lab.running
    assert (
        running.exec("host-a", ["sh", "-c", "echo a > /run/marker && echo a > /tmp/marker"]).returncode == 0
    )
    assert running.exec("host-b", ["ls", "/run/marker", "/tmp/marker"]).returncode != 0
    assert not Path("/run/marker").exists()
    # BIRD's control socket and PID file are the router's own
    assert running.exec("router", ["test", "-S", "/run/bird.ctl"]).returncode == 0
    assert not Path("/run/bird.ctl").exists()
    status = running.exec("router", ["birdc", "-s", "/run/bird.ctl", "show", "protocols"])
    assert "direct1" in status.stdout


def test_status_shows_every_node_running_and_healthy(lab: Lab) -> None:
    done = meshgate("lab", "status", str(lab.directory), "-o", "json")
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["phase"] == "ready"
    assert found["supervisor"]["running"] is True
    nodes = {node["name"]: node for node in found["nodes"]}
    assert {name: node["state"] for name, node in nodes.items()} == dict.fromkeys(
        ("router", "host-b", "host-a"), "running"
    )
    assert {name: node["health"] for name, node in nodes.items()} == {
        "router": "healthy",
        "host-b": "healthy",
        "host-a": "-",
    }
    assert nodes["host-b"]["mgmt_ipv4"] == "172.20.20.20"
    assert nodes["router"]["mgmt_ipv4"] == "172.20.20.2"
    table = meshgate("lab", "status", str(lab.directory))
    assert "host-b" in table.stdout
    assert "healthy" in table.stdout


def test_the_management_network_joins_the_nodes_outside_the_root_namespace(lab: Lab) -> None:
    # by name (each node's /etc/hosts lists the lab's nodes) over eth0 and the lab's bridge
    over_mgmt = lab.running.exec(
        "host-a", ["curl", "-sf", "--max-time", "5", "http://host-b:8080/index.html"]
    )
    assert (over_mgmt.returncode, over_mgmt.stdout) == (0, "hello from host-b\n"), over_mgmt.stderr
    route = lab.running.exec("host-a", ["ip", "-j", "route", "get", "172.20.20.20"])
    assert json.loads(route.stdout)[0]["dev"] == "eth0"
    root_addresses = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True, check=True).stdout
    assert "172.20.20.20" not in root_addresses


def test_running_lab_api(lab: Lab) -> None:
    running = RunningLab.find(lab.directory)
    assert running.name == "mg-runner-test"
    assert set(running.nodes) == {"router", "host-b", "host-a"}
    node = running.nodes["host-b"]
    assert node.netns == running.netns("host-b")
    assert node.netns in list_namespaces()
    assert node.labels["role"] == "server"
    assert node.mgmt_ipv4 == "172.20.20.20"
    assert process_alive(node.pid)
    assert running.exec("host-b", ["cat"], input="piped").stdout == "piped"
    assert running.exec("host-b", ["false"]).returncode == 1
    with pytest.raises(subprocess.TimeoutExpired):
        running.exec("host-b", ["sleep", "30"], timeout=0.5)


def test_up_refuses_while_the_lab_is_up(lab: Lab) -> None:
    again = meshgate("lab", "up", str(lab.directory))
    assert again.returncode == 4
    assert "already up" in again.stderr


def test_an_exited_cmd_is_restarted_as_its_policy_says(lab: Lab) -> None:
    before = read_state(lab.directory).nodes["host-b"]
    assert before.cmd is not None
    os.kill(before.cmd.pid, signal.SIGKILL)

    def restarted() -> bool:
        now = read_state(lab.directory).nodes["host-b"]
        return (
            now.restarts == before.restarts + 1
            and now.cmd_state == "running"
            and now.cmd is not None
            and now.cmd.pid != before.cmd.pid
        )  # type: ignore[union-attr]

    wait_until(restarted, DEADLINE, interval=0.05, what="host-b's cmd not restarted")
    wait_until(
        lambda: lab.running.exec("host-a", ["curl", "-sf", "--max-time", "2", "http://10.10.2.2:8080/index.html"]).returncode == 0,
        DEADLINE, interval=0.1, what="host-b not serving after its restart",
    )  # fmt: skip


def test_kill_node_and_start_node(lab: Lab) -> None:
    running = lab.running.refresh()
    running.kill_node("host-b", signal=signal.SIGTERM)
    state = read_state(lab.directory).nodes["host-b"]
    assert state.cmd_state == "stopped"
    assert running.exec("host-a", ["curl", "-s", "--max-time", "2", "http://10.10.2.2:8080/"]).returncode != 0
    running.start_node("host-b")
    wait_until(
        lambda: running.exec("host-a", ["curl", "-sf", "--max-time", "2", "http://10.10.2.2:8080/index.html"]).returncode == 0,
        DEADLINE, interval=0.1, what="host-b not serving after start_node",
    )  # fmt: skip


def test_down_leaves_nothing_behind_and_a_second_down_is_a_no_op(lab: Lab) -> None:
    state = read_state(lab.directory)
    done = meshgate("lab", "down", str(lab.directory))
    assert done.returncode == 0, done.stderr
    assert "is down (4 namespaces deleted)" in done.stdout
    assert_nothing_left(state)
    again = meshgate("lab", "down", str(lab.directory))
    assert again.returncode == 0
    assert "nothing to do" in again.stdout
    # logs stay for post-mortems
    assert (lab.directory / "clab-mg-runner-test" / "host-b" / "stderr.log").is_file()


# -- labs that fail ---------------------------------------------------------------------------


def test_a_failing_exec_fails_up_with_the_node_and_the_command(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    require_root()
    directory = copy_lab(tmp_path_factory, "failing-exec")
    try:
        done = meshgate("lab", "up", str(directory))
        assert done.returncode == 6
        assert (
            "node broken, stage exec: exec `ip route add 10.99.0.0/24 via 10.250.0.1` in the node exited with 2"
            in done.stderr
        )
        assert "Nexthop has invalid gateway" in done.stderr
        assert "stays up for inspection" in done.stderr
        state = read_state(directory)
        assert state.phase == "failed"
    finally:
        meshgate("lab", "down", str(directory))
    assert_nothing_left(state)


def test_an_unhealthy_node_fails_up_with_the_check_and_its_log(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    require_root()
    directory = copy_lab(tmp_path_factory, "failing-health")
    done = meshgate("lab", "up", "--cleanup-on-failure", str(directory))
    assert done.returncode == 6
    assert (
        "node sick, stage healthy: unhealthy: healthcheck `echo not ready; test -f /run/ready` failed 2 time(s) in a row"
        in done.stderr
    )
    assert "not ready" in done.stderr
    assert "stdout.log (last lines):\n  starting" in done.stderr
    # --cleanup-on-failure: already down
    assert lab_state.find_state_files(directory) == []
    assert not any(name.startswith("clab-mg-runner-fail-health-") for name in list_namespaces())


# -- down after a crash -----------------------------------------------------------------------


def test_down_cleans_up_after_the_supervisor_was_killed(tmp_path_factory: pytest.TempPathFactory) -> None:
    require_root()
    directory = copy_lab(tmp_path_factory, "three-node")
    try:
        assert meshgate("lab", "up", str(directory)).returncode == 0
        state = read_state(directory)
        assert state.supervisor is not None
        os.kill(state.supervisor.pid, signal.SIGKILL)
        wait_until(lambda: not state.supervisor.alive, DEADLINE, what="supervisor still alive")  # type: ignore[union-attr]
        # the nodes go on without it, and status says so
        assert (
            RunningLab.find(directory)
            .exec("host-a", ["curl", "-sf", "http://10.10.2.2:8080/index.html"])
            .returncode
            == 0
        )
        status = json.loads(meshgate("lab", "status", str(directory), "-o", "json").stdout)
        assert status["supervisor"]["running"] is False
    finally:
        done = meshgate("lab", "down", str(directory))
    assert done.returncode == 0, done.stderr
    assert_nothing_left(state)


def test_down_cleans_up_after_up_and_the_supervisor_were_killed_mid_way(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    require_root()
    directory = copy_lab(tmp_path_factory, "three-node")
    up = subprocess.Popen(
        [sys.executable, "-m", "meshgate", "lab", "up", str(directory)], cwd=REPO,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:

        def mid_way() -> bool:
            paths = lab_state.find_state_files(directory)
            if not paths:
                return False
            found = lab_state.read(paths[0])
            # host-a waits for host-b's health: router and host-b exist, host-a does not yet
            return found.nodes["host-a"].stage == "waiting" and found.nodes["host-b"].init is not None

        wait_until(mid_way, DEADLINE, interval=0.01, what="up never got mid-way")
        up.kill()
        up.wait()
        state = read_state(directory)
        assert state.supervisor is not None
        os.kill(state.supervisor.pid, signal.SIGKILL)
        wait_until(lambda: not state.supervisor.alive, DEADLINE, what="supervisor still alive")  # type: ignore[union-attr]
        state = read_state(directory)
        assert state.phase != "ready"
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        done = meshgate("lab", "down", str(directory))
    assert done.returncode == 0, done.stderr
    assert_nothing_left(state)
