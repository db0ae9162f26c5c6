"""Lab checks and packet traces for real, in network namespaces (needs root).

One small topology for the module: a client, a router with a route to the VIP, and two edges
with the VIP on ``lo`` and a tiny HTTP server answering with a header naming the edge (and
``/metrics``). The router's route is what each test sets first, so tests do not depend on order.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from meshgate.cli.lab_check_command import check_lab, read_checks
from meshgate.cli.lab_trace_command import render_trace
from meshgate.lab.check_run import CheckResult, run_check
from meshgate.lab.checks import parse_checks
from meshgate.lab.trace import TraceResult, trace, tracing
from meshgate.netns import Namespace
from tests.support.netns import AddressPool, NamespaceFactory, Star, Topology, require_root

pytestmark = [pytest.mark.root]

VIP = "203.0.113.10"
PREFIX = f"{VIP}/32"

EDGE_SERVER = """
import http.server, sys

NAME = sys.argv[1]
served = 0

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global served
        if self.path == "/metrics":
            body = (
                "# TYPE meshgate_edge_vip_announced gauge\\n"
                f'meshgate_edge_vip_announced{{vip="{sys.argv[2]}"}} 1\\n'
                f'meshgate_lab_requests_total{{edge="{NAME}",code="200"}} {served}\\n'
            ).encode()
        else:
            served += 1
            body = f"served by {NAME}\\n".encode()
        self.send_response(200)
        self.send_header("x-meshgate-edge", NAME)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("0.0.0.0", 80), Handler)
print("ready", flush=True)
server.serve_forever()
"""


@dataclass(frozen=True)
class Node:
    netns: str
    labels: Mapping[str, str] = field(default_factory=dict)


class NamespaceLab:
    """``LabNodes`` over plain namespaces (what ``RunningLab`` provides for a real lab)."""

    def __init__(self, namespaces: dict[str, Namespace], labels: dict[str, dict[str, str]]) -> None:
        self._namespaces = namespaces
        self.nodes = {name: Node(ns.name, labels.get(name, {})) for name, ns in namespaces.items()}

    def netns(self, node: str) -> str:
        return self._namespaces[node].name

    def exec(
        self, node: str, argv: list[str], *, timeout: float = 30, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self._namespaces[node].run(*argv, check=False, timeout=timeout, input=input)


@dataclass
class Lab:
    nodes: NamespaceLab
    star: Star

    @property
    def edge1(self) -> str:
        return self.star.edge_addresses[0]

    @property
    def edge2(self) -> str:
        return self.star.edge_addresses[1]

    def route_via(self, *gateways: str) -> None:
        if gateways:
            self.star.router.replace_route(PREFIX, via=list(gateways))
        elif self.star.router.nexthops(PREFIX):
            self.star.router.delete_route(PREFIX)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    require_root()
    namespaces, pool = NamespaceFactory(), AddressPool()
    try:
        star = Topology(namespaces, pool).star(2, vip=PREFIX)
        for index, edge in enumerate(star.edges, start=1):
            server = edge.popen(
                [sys.executable, "-c", EDGE_SERVER, f"edge{index}", VIP], stdout=subprocess.PIPE
            )
            assert server.stdout is not None
            assert server.stdout.readline() == b"ready\n"
        nodes = NamespaceLab(
            {"client": star.client, "router": star.router, "edge1": star.edges[0], "edge2": star.edges[1]},
            {"edge1": {"role": "edge"}, "edge2": {"role": "edge"}},
        )
        yield Lab(nodes, star)
    finally:
        namespaces.delete_all()
        pool.close()


def run(lab: Lab, deadline: str = "0s", **kind: object) -> CheckResult:
    """Run one check (``route={...}``, ``http={...}``...) against the lab."""
    (check,) = parse_checks({"checks": [{"name": "t", "deadline": deadline, **kind}]})
    return run_check(lab.nodes, check)


# -- checks ---------------------------------------------------------------------------------------


def test_route_checks_read_the_router_kernel_table(lab: Lab) -> None:
    route = {"node": "router", "prefix": PREFIX}
    lab.route_via(lab.edge1)
    ok = run(lab, route={**route, "via": [lab.edge1]})
    assert ok.passed, ok.verdict.message
    assert ok.attempts == 1
    assert ok.verdict.message == f"route {PREFIX} via {lab.edge1}"
    assert run(lab, route=route).passed  # any route

    wrong = run(lab, route={**route, "via": [lab.edge2]})
    assert not wrong.passed
    assert wrong.verdict.message == f"route {PREFIX} via {lab.edge1}, expected via {lab.edge2}"
    absent = run(lab, route={**route, "absent": True})
    assert absent.verdict.message == f"route {PREFIX} via {lab.edge1}, expected no route"

    lab.route_via(lab.edge1, lab.edge2)
    ecmp = run(lab, route={**route, "via": [lab.edge2, lab.edge1]})
    assert ecmp.passed, ecmp.verdict.message
    assert ecmp.verdict.message == f"route {PREFIX} via {lab.edge1}, {lab.edge2}"
    one_of_two = run(lab, route={**route, "via": [lab.edge1]})
    assert one_of_two.verdict.message == (
        f"route {PREFIX} via {lab.edge1}, {lab.edge2}, expected via {lab.edge1}"
    )

    lab.route_via()
    assert run(lab, route={**route, "absent": True}).passed
    missing = run(lab, route={**route, "via": [lab.edge1]})
    assert missing.verdict.message == f"no route {PREFIX}, expected via {lab.edge1}"


def test_http_checks_are_sent_from_inside_the_node(lab: Lab) -> None:
    lab.route_via(lab.edge1)
    get = {"node": "client", "url": f"http://{VIP}/", "host": "www.example.test"}
    served = run(
        lab, "5s", http={**get, "status": 200, "headers": {"X-Meshgate-Edge": "edge1"}, "body": r"by edge\d"}
    )
    assert served.passed, served.verdict.message
    assert served.verdict.message == "status 200, x-meshgate-edge: edge1"

    other = run(lab, http={**get, "headers": {"x-meshgate-edge": "edge2"}})
    assert not other.passed
    assert other.verdict.message == (
        "status 200, x-meshgate-edge: edge1, expected status 200, x-meshgate-edge: edge2"
    )
    status = run(lab, http={**get, "status": 404})
    assert status.verdict.message == "status 200, expected status 404"
    body = run(lab, http={**get, "body": "nowhere"})
    assert body.verdict.message == (
        "status 200, body 'served by edge1', expected status 200, body matching /nowhere/"
    )
    refused = run(lab, http={"node": "client", "url": f"http://{VIP}:81/"})
    assert not refused.passed
    assert refused.verdict.message.startswith("request failed: curl: (7)")
    assert refused.verdict.message.endswith(", expected status 200")


def test_metric_checks_scrape_inside_the_node(lab: Lab) -> None:
    metric = {"url": "http://127.0.0.1/metrics", "name": "meshgate_edge_vip_announced"}
    ok = run(lab, "5s", metric={**metric, "node": "edge1", "labels": {"vip": VIP}, "op": "==", "value": 1})
    assert ok.passed, ok.verdict.message
    assert ok.verdict.message == f'meshgate_edge_vip_announced{{vip="{VIP}"}} = 1'
    wrong = run(lab, metric={**metric, "node": "edge2", "op": "<", "value": 1})
    assert wrong.verdict.message == f'meshgate_edge_vip_announced{{vip="{VIP}"}} = 1, expected < 1'
    other = {"vip": "192.0.2.1"}
    none = run(lab, metric={**metric, "node": "edge2", "labels": other, "op": "==", "value": 1})
    assert none.verdict.message == (
        'no series meshgate_edge_vip_announced{vip="192.0.2.1"} '
        f'(there are meshgate_edge_vip_announced{{vip="{VIP}"}} 1), expected == 1'
    )
    refused = run(lab, metric={**metric, "node": "client", "op": "==", "value": 1})
    assert refused.verdict.message.startswith("scrape failed: curl: (7)")


def test_command_checks(lab: Lab) -> None:
    show_lo = ["ip", "-br", "address", "show", "dev", "lo"]
    ok = run(lab, command={"node": "edge1", "argv": show_lo, "stdout": f"{VIP}/32"})
    assert ok.passed, ok.verdict.message
    assert ok.verdict.message == "exit 0"
    failed = run(lab, command={"node": "client", "argv": ["ip", "route", "show", "table", "nonsense"]})
    assert not failed.passed
    assert failed.verdict.message.startswith("exit 255 (")
    assert failed.verdict.message.endswith(", expected exit 0")
    stdout = run(lab, command={"node": "client", "argv": show_lo, "stdout": r"203\.0\.113"})
    assert stdout.verdict.message.startswith("exit 0, stdout 'lo ")
    assert stdout.verdict.message.endswith(r", expected exit 0, stdout matching /203\.0\.113/")


def test_a_check_that_becomes_true_passes_before_its_deadline(lab: Lab) -> None:
    lab.route_via()
    (check,) = parse_checks(
        {"checks": [{"name": "later", "deadline": "15s", "interval": "100ms",
                     "route": {"node": "router", "prefix": PREFIX, "via": [lab.edge2]}}]}
    )  # fmt: skip
    later = threading.Timer(1.0, lab.route_via, args=(lab.edge2,))
    later.start()
    try:
        result = run_check(lab.nodes, check)
    finally:
        later.join()
    assert result.passed, result.verdict.message
    assert 1.0 <= result.seconds < 5.0
    assert result.attempts >= 5


def test_a_check_that_never_holds_fails_at_its_deadline(lab: Lab) -> None:
    lab.route_via(lab.edge1)
    (check,) = parse_checks(
        {"checks": [{"name": "never", "deadline": "1s", "interval": "200ms",
                     "route": {"node": "router", "prefix": PREFIX, "absent": True}}]}
    )  # fmt: skip
    result = run_check(lab.nodes, check)
    assert not result.passed
    assert 1.0 <= result.seconds < 2.0
    assert 4 <= result.attempts <= 7
    assert result.verdict.message == f"route {PREFIX} via {lab.edge1}, expected no route"


def test_a_checks_file_runs_in_order_and_reports(lab: Lab, tmp_path: Path) -> None:
    lab.route_via(lab.edge2)
    (tmp_path / "checks.yml").write_text(
        f"""
defaults: {{deadline: 0s}}
checks:
  - name: router prefers edge2
    route: {{node: router, prefix: {PREFIX}, via: [{lab.edge2}]}}
  - name: the client is served by edge2
    deadline: 5s
    http: {{node: client, url: "http://{VIP}/", headers: {{x-meshgate-edge: edge2}}}}
  - name: the client is served by edge1
    http: {{node: client, url: "http://{VIP}/", headers: {{x-meshgate-edge: edge1}}}}
"""
    )
    out: list[str] = []
    status = check_lab(lab.nodes, read_checks(tmp_path / "checks.yml"), "table", echo=out.append)
    assert status == 1
    table = out[0].splitlines()
    assert table[0].split() == ["CHECK", "KIND", "NODE", "RESULT", "TIME", "ATTEMPTS", "DETAIL"]
    assert [line.split("  ")[0] for line in table[1:4]] == [
        "router prefers edge2",
        "the client is served by edge2",
        "the client is served by edge1",
    ]
    assert "FAIL" in table[3]
    assert "x-meshgate-edge: edge2, expected status 200, x-meshgate-edge: edge1" in table[3]
    assert table[-1] == "2 of 3 checks passed"

    only: list[str] = []
    chosen = read_checks(tmp_path / "checks.yml", ["the client is served by edge2"])
    assert check_lab(lab.nodes, chosen, "json", echo=only.append) == 0
    assert json.loads(only[0])["checks"][0]["detail"] == "status 200, x-meshgate-edge: edge2"


# -- traces ---------------------------------------------------------------------------------------


def assert_agents_gone(lab: Lab) -> None:
    """Only the edges' HTTP servers remain in the namespaces: the agents were stopped."""
    assert lab.star.client.pids() == []
    assert lab.star.router.pids() == []
    for edge in lab.star.edges:
        assert len(edge.pids()) == 1


def test_probes_reach_the_edge_the_router_routes_to(lab: Lab) -> None:
    lab.route_via(lab.edge1)
    result = trace(lab.nodes, "client", VIP, 80, ["router", "edge1", "edge2"], count=10, interval=0.02)
    assert [probe.number for probe in result.probes] == list(range(10))
    assert result.counts == {"edge1": 10}
    assert result.lost == ()
    assert result.switches == ()
    assert result.notes == ()
    for probe in result.probes:
        assert probe.sent is not None
        assert [s.node for s in probe.seen] == ["router", "edge1"]  # the router on the way
        assert probe.reached is not None
        assert probe.reached.interface == "eth0"
        assert probe.sent <= probe.seen[0].time <= probe.seen[1].time < probe.sent + 1
    assert_agents_gone(lab)

    lab.route_via(lab.edge2)
    udp = trace(lab.nodes, "client", VIP, 53, (), count=5, interval=0.02, protocol="udp")
    assert udp.via == ("edge1", "edge2")  # role: edge
    assert udp.counts == {"edge2": 5}
    assert_agents_gone(lab)


def test_a_route_change_mid_stream_is_a_switch(lab: Lab) -> None:
    lab.route_via(lab.edge1)
    with tracing(lab.nodes, "client", VIP, 80, ["edge1", "edge2"]) as session:
        session.send(None, 0.01)
        session.wait_for(lambda r: r.counts.get("edge1", 0) >= 20, timeout=10)
        lab.route_via()  # the router drops them for a while: lost probes
        removed = time.time()
        session.wait_for(lambda r: len(r.lost) >= 5, timeout=10)
        lab.route_via(lab.edge2)
        moved = time.time()
        session.wait_for(lambda r: r.counts.get("edge2", 0) >= 20, timeout=10)
        result: TraceResult = session.finish()
    print("\n" + render_trace(result))
    (switch,) = result.switches
    assert (switch.old, switch.new) == ("edge1", "edge2")
    assert switch.lost >= 5
    assert switch.first_new - switch.last_old == switch.lost + 1  # no probe lost elsewhere
    assert switch.last_old_time <= removed + 0.1
    assert moved - 0.1 <= switch.first_new_time
    assert switch.seconds > moved - removed - 0.2
    assert set(result.lost) == set(range(switch.last_old + 1, switch.first_new))
    before = [p.reached.node for p in result.probes if p.number <= switch.last_old and p.reached]
    after = [p.reached.node for p in result.probes if p.number >= switch.first_new and p.reached]
    assert set(before) == {"edge1"}
    assert set(after) == {"edge2"}
    assert result.counts["edge1"] + result.counts["edge2"] + len(result.lost) == len(result.probes)
    assert_agents_gone(lab)


def test_a_sniffer_killed_with_its_node_is_noted(lab: Lab) -> None:
    lab.route_via(lab.edge1)
    edge2 = lab.star.edges[1]
    (server,) = edge2.pids()
    with tracing(lab.nodes, "client", VIP, 80, ["edge1", "edge2"]) as session:
        (sniffer,) = [pid for pid in edge2.pids() if pid != server]
        os.kill(sniffer, signal.SIGKILL)  # what a scenario's kill of every process of edge2 does
        noted = session.wait_for(lambda r: bool(r.notes), timeout=10)
        assert noted.notes == ("sniff agent in edge2 exited with -9",)
        session.send(5, 0.01)
        session.wait_sent(timeout=10)
        result = session.finish()
    assert result.counts == {"edge1": 5}
    assert result.notes == ("sniff agent in edge2 exited with -9",)
    assert_agents_gone(lab)
