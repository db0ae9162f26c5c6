"""Edges announcing a VIP through real ExaBGP 5 to a real upstream router (BIRD 2 and FRR 8, one
module run each), in network namespaces (root).

Topology: a router namespace links a client namespace and two edge namespaces (``edge-one`` in
zone one, ``edge-two`` in zone two, the VIP on each one's ``lo``). The mesh (global CP, zone CPs,
ingresses behind fault proxies, local proxies, workloads) runs in the test's own namespace, which
each edge reaches over a second link. Routes are read from the router's kernel table
(``ip -j route``) and from FRR's ``show bgp ... json``; the client uses curl and a ledger load
client (``meshgate/lab/load.py``).
"""

from __future__ import annotations

import json
import random
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from meshgate.faults.faults import Faults
from meshgate.netns import Namespace
from meshgate.netns.flow_pinning import pin_flows, unpin_flows
from meshgate.netns.namespace import wait_until
from meshgate.netns.routers import Bird, Frr, Peer, UpstreamRouter
from tests.support import proxies
from tests.support.edges import HOSTNAME, EdgeMesh, EdgeProcess, build_mesh, edge_config
from tests.support.factories import doc
from tests.support.fault_proxies import start_fault_proxy
from tests.support.netns import AddressPool, NamespaceFactory, Star, Topology, require_root
from tests.support.processes import cli

pytestmark = [pytest.mark.root, pytest.mark.slow]

ROUTER_ASN, EDGE_ASN = 65000, 65100
VIP = f"198.18.{random.randrange(0, 255)}.{random.randrange(1, 255)}"
PREFIX = f"{VIP}/32"
ANNOUNCE = {"interval": 0.25, "rise": 2, "fall": 3}
REPO = Path(__file__).resolve().parents[2]
GSHUT = "65535:0"


def listen_port() -> int:
    return proxies.listen_port("0.0.0.0")


def link_to_root(ns: Namespace, ifname: str, pool: AddressPool) -> tuple[str, str]:
    """A veth between the test's namespace and ``ns``: (our address, ns's address)."""
    ours, theirs = pool.next_link()
    root_if, temp = f"mgr{secrets.token_hex(5)}", f"mgt{secrets.token_hex(5)}"
    subprocess.run(["ip", "link", "add", root_if, "type", "veth", "peer", "name", temp], check=True)
    subprocess.run(["ip", "link", "set", temp, "netns", ns.name], check=True)
    ns.ip("link", "set", temp, "name", ifname)
    ns.set_up(ifname)
    ns.add_address(ifname, str(theirs))
    subprocess.run(["ip", "addr", "add", str(ours), "dev", root_if], check=True)
    subprocess.run(["ip", "link", "set", root_if, "up"], check=True)
    return str(ours.ip), str(theirs.ip)


@dataclass
class Lab:
    kind: str
    star: Star
    router: UpstreamRouter
    mesh: EdgeMesh
    root: Path

    def nexthops(self) -> set[str]:
        return self.star.router.nexthops(PREFIX)

    @property
    def edge_address(self) -> dict[str, str]:
        return {"edge-one": self.star.edge_addresses[0], "edge-two": self.star.edge_addresses[1]}

    def edge(self, name: str) -> EdgeProcess:
        return self.mesh.edges[name]

    def curl(self, path: str = "/") -> subprocess.CompletedProcess[str]:
        port = self.mesh.ports["http"]
        return self.star.client.run(
            "curl", "-sS", "-D", "-", "--max-time", "5", "-H", f"Host: {HOSTNAME}", f"http://{VIP}:{port}{path}",
            check=False,
        )  # fmt: skip

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return cli(list(args), self.mesh.cp.cli_env())

    def communities(self) -> list[list[str]]:
        """The communities of each path the router has for the VIP (FRR: from its JSON)."""
        if isinstance(self.router, Frr):
            route = self.router.bgp_route(PREFIX)
            # FRR names the well-known community: 65535:0 is "graceful-shutdown" in its JSON
            return [
                [GSHUT if c in ("graceful-shutdown", "gracefulShutdown") else c
                 for c in p.get("community", {}).get("string", "").split()]
                for p in route.get("paths", [])
            ]  # fmt: skip
        text = self.router.show(f"show route for {PREFIX} all")  # type: ignore[attr-defined]
        return [[c.replace("(", "").replace(")", "").replace(",", ":") for c in line.split()[1:]]
                for line in text.splitlines() if "BGP.community" in line]  # fmt: skip


@pytest.fixture(scope="module", params=["bird", "frr"])
def lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    require_root()
    kind: str = request.param
    root = tmp_path_factory.mktemp(f"edge-bgp-{kind}")
    factory, pool = NamespaceFactory(), AddressPool()
    mesh: EdgeMesh | None = None
    try:
        star = Topology(factory, pool).star(2, vip=PREFIX)
        star.router.sysctl("net.ipv4.fib_multipath_hash_policy", 1)  # spread connections by port too
        ours = [link_to_root(edge, "mesh0", pool) for edge in star.edges]
        # Zone ingresses are advertised at our end of edge-one's link; edge-two reaches it via us.
        advertise = ours[0][0]
        star.edges[1].add_route(f"{advertise}/32", via=ours[1][0])
        ports = {"http": listen_port(), "https": listen_port(), "tcp": listen_port()}
        mesh = build_mesh(
            root, vip=VIP, ports=ports, listen_port=listen_port, fault_proxy=start_fault_proxy,
            fault_host=advertise, zone_cp_host="0.0.0.0",
        )  # fmt: skip
        router_class = Bird if kind == "bird" else Frr
        router = router_class(
            star.router, root / kind, asn=ROUTER_ASN, router_id=star.router_client_address,
            peers=[Peer(address, EDGE_ASN) for address in star.edge_addresses],
        )  # fmt: skip
        router.start()
        for index, (name, zone) in enumerate((("edge-one", "one"), ("edge-two", "two"))):
            mesh.admin.apply(doc("Edge", name, {"zone": zone, "bgp": {
                "localASN": EDGE_ASN, "routerID": star.edge_addresses[index], "holdTime": 9,
                "neighbors": [{"address": star.router_edge_addresses[index], "peerASN": ROUTER_ASN}],
            }}))  # fmt: skip
            zone_cp = mesh.zones[zone].cp
            edge = EdgeProcess(
                root / name, f"tls://{ours[index][0]}:{zone_cp.proxy_port}",
                edge_config(name, announce=ANNOUNCE), token=mesh.admin.token("edge", zone),
                netns=star.edges[index].name, admin_port=listen_port(),
            )  # fmt: skip
            mesh.edges[name] = edge.start(wait_ready=False)
        for edge in mesh.edges.values():
            wait_until(edge.ready, 30, what=f"edge {edge.name} ready ({edge.log})")
        lab = Lab(kind, star, router, mesh, root)
        took = wait_until(
            lambda: lab.nexthops() == set(star.edge_addresses), 30, what="ECMP route with both edges"
        )
        print(f"\n[{kind}] edges up to ECMP route: {took:.2f}s")
        yield lab
    finally:
        if mesh is not None:
            mesh.stop()
        factory.delete_all()
        pool.close()


def test_the_router_holds_an_ecmp_route_and_a_client_gets_a_200(lab: Lab) -> None:
    assert lab.nexthops() == set(lab.star.edge_addresses)
    if isinstance(lab.router, Frr):
        route = lab.router.bgp_route(PREFIX)
        paths = route["paths"]
        assert len(paths) == 2
        assert all(p.get("multipath") or p.get("bestpath") for p in paths), paths
        # Identical MED and communities from both edges: nothing breaks the tie.
        assert len({json.dumps([p.get("med"), p.get("community")]) for p in paths}) == 1
    done = lab.curl("/from-client")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("HTTP/1.1 200"), done.stdout
    assert "x-meshgate-edge: edge-" in done.stdout.lower()
    report = lab.edge("edge-one").status()
    assert [a["state"] for a in report["announcements"]] == ["announced"]
    assert {s["state"] for s in report["sessions"]} == {"established"}


def test_all_zones_unhealthy_withdraws_the_route_then_it_comes_back(lab: Lab) -> None:
    fall_bound = ANNOUNCE["fall"] * ANNOUNCE["interval"] + 1.0
    started = time.monotonic()
    for zone in lab.mesh.zones.values():
        zone.fault.set(Faults(refuse=True))
        zone.fault.reset_existing()
    try:
        took = wait_until(lambda: not lab.nexthops(), 10, what="route withdrawn by both edges")
        print(f"\n[{lab.kind}] all zones down -> route gone: {took:.2f}s (bound {fall_bound:.2f}s)")
        assert time.monotonic() - started <= fall_bound + 0.5  # the poll's own slack
        report = lab.edge("edge-one").status()
        assert report["announcements"][0]["state"] == "withdrawn"
        assert "no zone can serve" in report["announcements"][0]["reason"]
    finally:
        for zone in lab.mesh.zones.values():
            zone.fault.set(Faults())
    took = wait_until(lambda: lab.nexthops() == set(lab.star.edge_addresses), 15, what="route back")
    print(f"[{lab.kind}] zones back -> ECMP route again: {took:.2f}s")


def test_sigkill_of_the_edge_controller_removes_its_route_within_a_second(lab: Lab) -> None:
    edge = lab.edge("edge-two")
    ns = lab.star.edges[1]
    edge.sigkill()
    started = time.monotonic()
    took = wait_until(
        lambda: lab.nexthops() == {lab.edge_address["edge-one"]}, 5, what="edge-two's path gone"
    )
    print(f"\n[{lab.kind}] SIGKILL of the controller -> route gone: {took * 1000:.0f} ms")
    assert time.monotonic() - started < 1.0 + 0.2
    wait_until(lambda: not ns.pids(), 5, what="ExaBGP and its helper gone with the controller")
    edge.start(wait_ready=True)  # its identity and configuration are in its data dir
    wait_until(lambda: lab.nexthops() == set(lab.star.edge_addresses), 30, what="edge-two back")


def run_load(lab: Lab, seconds: float, threads: int = 6) -> subprocess.Popen[bytes]:
    port = lab.mesh.ports["http"]
    return lab.star.client.popen(
        [sys.executable, "-m", "meshgate.lab.load", "--url", f"http://{VIP}:{port}/drain",
         "--host", HOSTNAME, "--threads", str(threads), "--seconds", str(seconds)],
        stdout=subprocess.PIPE, cwd=str(REPO),
    )  # fmt: skip


def served(lab: Lab) -> int:
    return sum(1 for zone in lab.mesh.zones.values() for r in zone.web.requests if r.target == "/drain")


def drain_under_load(lab: Lab, pinned: bool) -> dict[str, Any]:
    router = lab.star.router
    if pinned:
        pin_flows(router, lab.star.next_hops, destinations=[PREFIX])
    before = served(lab)
    load = run_load(lab, seconds=8.0)
    try:
        assert load.stdout is not None
        json.loads(load.stdout.readline())  # started
        wait_until(lambda: served(lab) >= before + 30, 10, what="load reaching the workloads")
        asked = time.monotonic()  # (the CLI's own start-up counts: it is part of what an operator waits)
        drained = lab.cli("edge", "drain", "edge-one", "--reason", "test")
        assert drained.returncode == 0, drained.stderr
        wait_until(lambda: any(GSHUT in c for c in lab.communities()), 20, what="65535:0 at the router")
        signalled = time.monotonic()
        wait_until(
            lambda: lab.nexthops() == {lab.edge_address["edge-two"]}, 10, what="route moved to edge-two"
        )
        switched = time.monotonic()
        wait_until(
            lambda: lab.edge("edge-one").status().get("drain", {}).get("phase") == "withdrawn", 15,
            what="edge-one withdrawn",
        )  # fmt: skip
        withdrawn = time.monotonic()
        out, _ = load.communicate(timeout=30)
    finally:
        if load.poll() is None:
            load.kill()
        lab.cli("edge", "undrain", "edge-one")
        if pinned:
            unpin_flows(router)
    ledger = json.loads(out.decode().strip().splitlines()[-1])["requests"]
    failed = [r for r in ledger if r["outcome"] != "ok"]
    after = [r for r in failed if r["opened"] > switched]
    figures = {
        "pinned": pinned, "requests": len(ledger), "failed": len(failed),
        "resets_at_switch": len([r for r in failed if r["opened"] <= switched]),
        "failed_on_connections_opened_after_switch": len(after),
        "drain_to_signal_s": round(signalled - asked, 2), "drain_to_switch_s": round(switched - asked, 2),
        "drain_to_withdraw_s": round(withdrawn - asked, 2),
        "served_by": sorted({r.get("edge", "") for r in ledger if r["outcome"] == "ok"}),
        "failures": [
            {"outcome": r["outcome"], "edge": r.get("edge", ""), "opened": round(r["opened"] - asked, 3),
             "start": round(r["start"] - asked, 3), "end": round(r["end"] - asked, 3)}
            for r in failed
        ],
    }  # fmt: skip
    print(f"\n[{lab.kind}] drain: {json.dumps(figures)}")
    wait_until(lambda: lab.nexthops() == set(lab.star.edge_addresses), 30, what="ECMP again after undrain")
    return figures


def test_drain_under_load_without_flow_pinning(lab: Lab) -> None:
    figures = drain_under_load(lab, pinned=False)
    assert figures["requests"] > 50
    assert figures["failed_on_connections_opened_after_switch"] == 0
    assert figures["served_by"] == ["edge-one", "edge-two"]


def test_drain_under_load_with_flow_pinning_loses_nothing(lab: Lab) -> None:
    figures = drain_under_load(lab, pinned=True)
    assert figures["requests"] > 50
    assert figures["failed"] == 0, figures["failures"]
