"""The BGP speaker with real ExaBGP 5 against real routers (BIRD 2 and FRR 8) in network
namespaces (root).

A router namespace and an edge namespace share a link. The router runs BIRD or FRR; the edge runs
``tests/support/speaker_process.py`` (a minimal controller: a ``Speaker`` that announces the VIP,
then takes commands on stdin). Routes are read from the router's kernel table (``ip -j route``)
and from FRR's ``show bgp ipv4 unicast PREFIX json``. Figures are printed (``-s`` shows them).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bgp.process import Pidfd
from meshgate.netns import Namespace, process_alive, wait_until
from meshgate.netns.routers import Bird, Frr, Peer, UpstreamRouter
from tests.support.netns import (
    Topology,
    namespaces_fixture,  # noqa: F401
    topology_fixture,  # noqa: F401
)

pytestmark = [pytest.mark.root, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
ROUTER_ASN, EDGE_ASN = 65000, 65100
VIP = "203.0.113.10"
PREFIX = f"{VIP}/32"
SESSION_DEADLINE = 30.0
ROUTE_DEADLINE = 5.0


def figure(what: str, seconds: float) -> None:
    print(f"\n[figure] {what}: {seconds * 1000:.0f} ms")


class Controller:
    """``speaker_process`` in the edge namespace: one JSON line per command."""

    def __init__(self, ns: Namespace, config: dict[str, Any]) -> None:
        self.proc = ns.popen(
            [sys.executable, "-m", "tests.support.speaker_process", json.dumps(config)],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,
        )
        self.first = self.read()

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"the controller exited with {self.proc.wait(10)}"
        doc: dict[str, Any] = json.loads(line)
        return doc

    def ask(self, **request: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request).encode() + b"\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> int:
        """Close stdin: the controller stops the speaker and exits."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.proc.wait(30)


@dataclass
class Lab:
    router_ns: Namespace
    edge_ns: Namespace
    router: UpstreamRouter
    router_address: str
    edge_address: str
    workdir: Path

    def bgp(self, **extra: Any) -> dict[str, Any]:
        return {
            "localASN": EDGE_ASN,
            "routerID": self.edge_address,
            "holdTime": 9,
            "neighbors": [
                {"address": self.router_address, "peerASN": ROUTER_ASN, "localAddress": self.edge_address}
            ],
            **extra,
        }

    def controller(self, *, vip: str | None = VIP, unchecked: bool = False, **bgp: Any) -> Controller:
        config = {"bgp": self.bgp(**bgp), "workdir": str(self.workdir), "vip": vip, "unchecked": unchecked}
        return Controller(self.edge_ns, config)

    def next_hops(self) -> set[str]:
        return self.router_ns.nexthops(PREFIX)

    def wait_route(self, present: bool, what: str) -> float:
        expected = {self.edge_address} if present else set()
        return wait_until(lambda: self.next_hops() == expected, ROUTE_DEADLINE, interval=0.002, what=what)

    def wait_established(self) -> float:
        return self.router.wait_established(self.edge_address, SESSION_DEADLINE)


@pytest.fixture(params=["bird", "frr"])
def lab(request: pytest.FixtureRequest, topology: Topology, tmp_path: Path) -> Iterator[Lab]:
    router_ns = topology.namespaces("router")
    edge_ns = topology.namespaces("edge")
    router_address, edge_address = topology.link(router_ns, edge_ns)
    kind = Bird if request.param == "bird" else Frr
    router = kind(
        router_ns,
        tmp_path / "router",
        asn=ROUTER_ASN,
        router_id=router_address,
        peers=[Peer(edge_address, EDGE_ASN)],
    )
    router.start()
    try:
        yield Lab(router_ns, edge_ns, router, router_address, edge_address, tmp_path / "edge")
    finally:
        router.stop()


def test_announce_installs_the_route_and_withdraw_removes_it(lab: Lab) -> None:
    controller = lab.controller(vip=None)
    assert controller.first["ready"] is True, controller.first
    figure(f"{lab.router.kind}: speaker start (validate, spawn, helper connected)", controller.first["start"])
    figure(f"{lab.router.kind}: session established", lab.wait_established())
    assert lab.next_hops() == set()

    started = time.monotonic()
    answer = controller.ask(op="announce", prefix=VIP, communities=["65100:1"])
    assert answer["ok"] is True, answer
    assert answer["announced"] == [PREFIX]
    lab.wait_route(True, "announced route in the router's kernel table")
    figure(f"{lab.router.kind}: announce -> route installed", time.monotonic() - started)
    figure(f"{lab.router.kind}: announce acknowledged by ExaBGP", answer["took"])

    started = time.monotonic()
    answer = controller.ask(op="withdraw", prefix=PREFIX)
    assert answer["ok"] is True, answer
    assert answer["announced"] == []
    lab.wait_route(False, "withdrawn route gone from the router's kernel table")
    figure(f"{lab.router.kind}: withdraw -> route removed", time.monotonic() - started)

    status = controller.ask(op="status")
    assert status["established"] == [lab.router_address]
    assert (
        f'meshgate_bgp_neighbor_up{{neighbor="{lab.router_address}",peer_asn="{ROUTER_ASN}"}} 1'
        in status["metrics"]
    )
    assert controller.close() == 0
    assert lab.edge_ns.pids() == []


def test_killing_the_controller_withdraws_within_a_second_and_leaves_no_process(lab: Lab) -> None:
    controller = lab.controller()
    ready = controller.first
    assert ready["ready"] is True, ready
    lab.wait_established()
    lab.wait_route(True, "announced route")
    exabgp, helper = Pidfd(ready["exabgp_pid"]), Pidfd(ready["helper_pid"])
    try:
        started = time.monotonic()
        controller.proc.kill()
        took = wait_until(lambda: not lab.next_hops(), 5.0, interval=0.002, what="route gone after SIGKILL")
        figure(f"{lab.router.kind}: controller SIGKILL -> route gone", took)
        assert took < 1.0
        wait_until(lambda: exabgp.exited() and helper.exited(), 5.0, what="ExaBGP and its helper exited")
        figure(f"{lab.router.kind}: controller SIGKILL -> exabgp and helper gone", time.monotonic() - started)
        controller.proc.wait(5)
        assert lab.edge_ns.pids() == []
    finally:
        exabgp.close()
        helper.close()


def test_exabgp_killed_is_restarted_and_announces_again(lab: Lab) -> None:
    controller = lab.controller()
    assert controller.first["ready"] is True, controller.first
    lab.wait_established()
    lab.wait_route(True, "announced route")
    first = controller.first["exabgp_pid"]
    started = time.monotonic()
    subprocess.run(["kill", "-9", str(first)], check=True)
    figure(f"{lab.router.kind}: exabgp SIGKILL -> route gone", lab.wait_route(False, "route gone"))
    lab.wait_route(True, "route announced again by a new ExaBGP")
    figure(f"{lab.router.kind}: exabgp SIGKILL -> restarted and route back", time.monotonic() - started)
    status = controller.ask(op="status")
    assert status["running"] is True
    assert status["restarts"] == 1
    assert status["exabgp_pid"] != first
    assert not process_alive(first)
    assert status["announced"] == [PREFIX]
    assert controller.close() == 0
    assert lab.edge_ns.pids() == []


def test_a_neighbor_that_never_comes_up_is_never_claimed_up(lab: Lab) -> None:
    phantom = "192.0.2.77"  # no route to it from the edge: every attempt fails
    controller = lab.controller(
        neighbors=[
            {"address": lab.router_address, "peerASN": ROUTER_ASN, "localAddress": lab.edge_address},
            {"address": phantom, "peerASN": 65999},
        ]
    )
    assert controller.first["ready"] is True, controller.first
    lab.wait_established()
    lab.wait_route(True, "route through the live neighbor")
    deadline = time.monotonic() + 3.0
    samples = 0
    while time.monotonic() < deadline:
        status = controller.ask(op="status")
        samples += 1
        phantom_state = next(n for n in status["neighbors"] if n["address"] == phantom)
        assert phantom_state["state"] != "established", status
        assert phantom not in status["established"]
    assert f'meshgate_bgp_neighbor_up{{neighbor="{phantom}",peer_asn="65999"}} 0' in status["metrics"]
    assert status["established"] == [lab.router_address]
    assert phantom_state["state"] in ("idle", "connect", "down")
    assert samples > 10
    assert controller.close() == 0


def test_a_configuration_exabgp_refuses_raises_config_invalid(lab: Lab) -> None:
    # settings_from_spec refuses this too: built without it, only ExaBGP stands in the way
    controller = lab.controller(
        unchecked=True,
        neighbors=[{"address": lab.router_address, "peerASN": ROUTER_ASN, "localAddress": "2001:db8::1"}],
    )
    assert controller.first["ready"] is False
    assert controller.first["kind"] == "ConfigInvalid"
    assert "local-address and peer-address must be of the same family" in controller.first["error"]
    assert controller.proc.wait(10) == 1
    assert not (lab.workdir / "exabgp.log").exists()  # refused before anything was started
    assert lab.edge_ns.pids() == []


def test_graceful_shutdown_reaches_the_router(lab: Lab) -> None:
    controller = lab.controller(vip=None)
    assert controller.first["ready"] is True, controller.first
    lab.wait_established()
    answer = controller.ask(
        op="announce", prefix=VIP, communities=["65100:1"], graceful_shutdown=True, prepend=2
    )
    assert answer["ok"] is True, answer
    lab.wait_route(True, "route with graceful shutdown")
    if isinstance(lab.router, Frr):
        frr = lab.router
        route = wait_until(lambda: frr.bgp_route(PREFIX).get("paths"), ROUTE_DEADLINE, what="FRR's BGP route")
        path = frr.bgp_route(PREFIX)["paths"][0]
        # FRR names 65535:0 (RFC 8326 GRACEFUL_SHUTDOWN) "graceful-shutdown" / "gracefulShutdown"
        assert path["community"]["list"] == ["65100:1", "gracefulShutdown"], path
        assert path["community"]["string"] == "65100:1 graceful-shutdown"
        assert path["locPrf"] == 0  # honoured
        assert path["aspath"]["string"] == f"{EDGE_ASN} {EDGE_ASN} {EDGE_ASN}"
        assert [hop["ip"] for hop in path["nexthops"]] == [lab.edge_address]
        assert route
    else:
        assert isinstance(lab.router, Bird)
        shown = lab.router.show(f"show route for {PREFIX} all")
        assert "BGP.community: (65100,1) (65535,0)" in shown, shown
        assert f"BGP.as_path: {EDGE_ASN} {EDGE_ASN} {EDGE_ASN}" in shown, shown
        assert "BGP.local_pref: 0" in shown, shown  # the graceful-shutdown import filter
    assert controller.close() == 0
