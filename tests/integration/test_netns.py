"""Network namespaces, veth links, BIRD and FRR as routers, and flow pinning (needs root).

Figures (route install times, session times) are printed: run with ``-s`` to see them.
"""

from __future__ import annotations

import ipaddress
import json
import os
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from meshgate.faults import Faults
from meshgate.netns import (
    Namespace,
    cleanup_stale,
    list_namespaces,
    process_alive,
    veth,
    veth_to_root,
    wait_until,
)
from meshgate.netns.flow_pinning import pin_flows, pinned, unpin_flows
from meshgate.netns.namespace import STATE_DIR
from meshgate.netns.routers import Bird, Frr, Peer, UpstreamRouter, peer_routers
from tests.support.faults import ThreadedFaultProxy
from tests.support.netns import (
    NameServer,
    NamespaceFactory,
    Topology,
    ask,
    namespaces_fixture,  # noqa: F401
    topology_fixture,  # noqa: F401
)

pytestmark = [pytest.mark.root, pytest.mark.slow]

VIP = "203.0.113.10"
ROUTE_DEADLINE = 10.0

ECHO_SERVER = """
import socket, sys
s = socket.socket()
s.bind((sys.argv[1], 0))
s.listen()
print(s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept()
    c.sendall(c.recv(100).upper())
    c.close()
"""


def figure(what: str, seconds: float) -> None:
    print(f"\n[figure] {what}: {seconds * 1000:.0f} ms")


def test_namespaces_veth_routes_and_processes(namespaces: NamespaceFactory) -> None:
    a, b = namespaces("nsa"), namespaces("nsb")
    assert a.name.startswith("mg-nsa-")
    assert len(a.name) == len("mg-nsa-") + 6
    assert a.owner is not None
    assert a.owner.pid == os.getpid()
    veth(a, "to-b", b, "to-a")
    a.add_address("to-b", "192.168.77.1/30")
    b.add_address("to-a", "192.168.77.2/30")
    b.add_loopback_address("198.51.100.7/32")
    assert "198.51.100.7/32" in b.addresses("lo")

    server = b.popen([sys.executable, "-c", ECHO_SERVER, "198.51.100.7"], stdout=subprocess.PIPE)
    assert server.stdout is not None
    port = int(server.stdout.readline())
    assert server.pid in b.pids()

    with pytest.raises(OSError, match="unreachable"):  # no route yet
        a.tcp_connect("198.51.100.7", port, timeout=2).close()
    a.add_route("198.51.100.7/32", via="192.168.77.2")
    assert a.nexthops("198.51.100.7/32") == {"192.168.77.2"}
    assert a.routes("198.51.100.7/32")[0]["dev"] == "to-b"
    with a.tcp_connect("198.51.100.7", port) as conn:
        conn.sendall(b"hello")
        assert conn.recv(100) == b"HELLO"

    # a process run through `ip netns exec` sees the namespace's own interfaces
    links = json.loads(a.run("ip", "-j", "link", "show").stdout)
    assert {link["ifname"] for link in links} == {"lo", "to-b"}

    # ECMP routes: several gateways; absent: none
    a.add_address("to-b", "192.168.77.5/30")
    a.add_route("198.51.100.8/32", via=["192.168.77.2", "192.168.77.6"], dev="to-b")
    assert a.nexthops("198.51.100.8/32") == {"192.168.77.2", "192.168.77.6"}
    assert a.nexthops("198.51.100.9/32") == set()
    a.replace_route("198.51.100.8/32", via="192.168.77.6")
    assert a.nexthops("198.51.100.8/32") == {"192.168.77.6"}

    a.sysctl("net.ipv4.ip_forward", 1)
    assert a.sysctl_value("net.ipv4.ip_forward") == "1"
    assert b.sysctl_value("net.ipv4.ip_forward") == "0"


def test_delete_leaves_nothing(namespaces: NamespaceFactory) -> None:
    a, b = namespaces("dela"), namespaces("delb")
    veth(a, "dela0", b, "delb0")
    root_side = veth_to_root(b, "up0")
    b.add_address("up0", "192.168.78.2/30")
    subprocess.run(["ip", "address", "add", "192.168.78.1/30", "dev", root_side], check=True)
    with b.tcp_listen("192.168.78.2") as listener:  # the root namespace reaches b
        socket.create_connection(("192.168.78.2", listener.getsockname()[1]), timeout=3).close()
    recorded = a.popen(["sleep", "300"])
    # ignores SIGTERM: needs the SIGKILL after the deadline
    stubborn = a.popen(["sh", "-c", "trap '' TERM; sleep 300"])
    # not recorded: started in the background by a command that has exited
    orphan = int(a.run("sh", "-c", "sleep 300 >/dev/null 2>&1 & echo $!").stdout)
    wait_until(lambda: {recorded.pid, stubborn.pid, orphan} <= set(a.pids()), 5, what="processes in a")
    names = {a.name, b.name}

    started = time.monotonic()
    a.delete(deadline=0.5)
    b.delete()
    figure(
        "delete of two namespaces with 3 processes (one ignoring SIGTERM, 0.5 s deadline)",
        time.monotonic() - started,
    )

    assert not names & set(list_namespaces())
    assert not any((STATE_DIR / name).exists() for name in names)
    assert recorded.poll() is not None
    assert stubborn.poll() is not None
    assert not process_alive(orphan)
    root_links = {
        link["ifname"] for link in json.loads(subprocess.check_output(["ip", "-j", "link", "show"]))
    }
    assert not {"dela0", "delb0", root_side} & root_links
    a.delete()  # idempotent


CRASHING_OWNER = """
import sys, time
from meshgate.netns import Namespace, veth
a, b = Namespace.create("crash"), Namespace.create("crash")
veth(a, "c0", b, "c1")
sleeper = a.popen(["sleep", "300"])
print(a.name, b.name, sleeper.pid, flush=True)
time.sleep(300)
"""


def test_cleanup_stale_removes_a_crashed_runs_namespaces_only(namespaces: NamespaceFactory) -> None:
    mine = namespaces("live")
    owner = subprocess.Popen(
        [sys.executable, "-c", CRASHING_OWNER],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    assert owner.stdout is not None
    first, second, sleeper = owner.stdout.readline().split()
    crashed = [Namespace(first), Namespace(second)]
    try:
        owner.kill()  # the owner dies without cleaning up
        owner.wait()
        owner.stdout.close()
        assert {first, second} <= set(list_namespaces())
        assert process_alive(int(sleeper))

        deleted = cleanup_stale()

        assert {first, second} <= set(deleted)
        assert mine.name not in deleted
        assert not {first, second} & set(list_namespaces())
        assert mine.exists()
        assert (STATE_DIR / mine.name).exists()
        assert not process_alive(int(sleeper))
    finally:
        for namespace in crashed:
            namespace.delete()


# -- routers ----------------------------------------------------------------------------------


def test_bird_and_frr_peer_and_install_each_others_routes(topology: Topology, tmp_path: Path) -> None:
    bird_ns, frr_ns = topology.namespaces("bird"), topology.namespaces("frr")
    bird_address, frr_address = topology.link(bird_ns, frr_ns)
    frr_ns.add_loopback_address("198.51.100.20/32")  # FRR originates a /32 of its lo
    bird = Bird(bird_ns, tmp_path / "bird", asn=65001, router_id=bird_address, networks=["198.51.100.10/32"])
    frr = Frr(frr_ns, tmp_path / "frr", asn=65002, router_id=frr_address, networks=["198.51.100.20/32"])
    peer_routers(bird, bird_address, frr, frr_address)

    started = time.monotonic()
    bird.start()
    frr.start()
    figure("BIRD and FRR started", time.monotonic() - started)
    bird.wait_established(frr_address)
    figure("start to session established", time.monotonic() - started)
    assert frr.established(bird_address)

    figure(
        "FRR's /32 in BIRD's kernel table",
        wait_until(lambda: bird_ns.nexthops("198.51.100.20/32") == {frr_address}, ROUTE_DEADLINE),
    )
    figure(
        "BIRD's /32 in FRR's kernel table",
        wait_until(lambda: frr_ns.nexthops("198.51.100.10/32") == {bird_address}, ROUTE_DEADLINE),
    )
    assert frr.bgp_route("198.51.100.10/32")["paths"][0]["aspath"]["string"] == "65001"
    assert "AS65002i" in bird.show("show route for 198.51.100.20/32 all").replace(" ", "")
    assert bird_ns.routes("198.51.100.20/32")[0]["protocol"] == "bird"
    assert frr_ns.routes("198.51.100.10/32")[0]["protocol"] == "bgp"

    # the data path follows the installed route: FRR's side reaches the /32 BIRD announces
    bird_ns.add_loopback_address("198.51.100.10/32")
    with bird_ns.tcp_listen("198.51.100.10") as listener:
        frr_ns.tcp_connect("198.51.100.10", listener.getsockname()[1]).close()

    started = time.monotonic()
    frr.stop()
    wait_until(lambda: not bird_ns.nexthops("198.51.100.20/32"), ROUTE_DEADLINE, what="route withdrawn")
    figure("FRR stopped to route gone from BIRD's kernel", time.monotonic() - started)
    assert not bird.established(frr_address)
    bird.stop()
    assert not bird.running
    assert not frr.running


def _router(kind: str, ns: Namespace, workdir: Path, router_id: str, peers: list[Peer]) -> UpstreamRouter:
    if kind == "bird":
        return Bird(ns, workdir, asn=65000, router_id=router_id, peers=peers)
    return Frr(ns, workdir, asn=65000, router_id=router_id, peers=peers)


@pytest.mark.parametrize("kind", ["bird", "frr"])
def test_router_ecmp_over_edges_and_graceful_shutdown(topology: Topology, tmp_path: Path, kind: str) -> None:
    star = topology.star(edges=2)
    prefix = f"{VIP}/32"
    router = _router(
        kind,
        star.router,
        tmp_path / "router",
        star.router_edge_addresses[0],
        [Peer(address, 65100, description=f"edge{i + 1}") for i, address in enumerate(star.edge_addresses)],
    )
    router.start()
    edges = [
        Frr(
            edge,
            tmp_path / f"edge{i + 1}",
            asn=65100,
            router_id=star.edge_addresses[i],
            peers=[Peer(star.router_edge_addresses[i], 65000, export=True)],
            networks=[prefix],
        )
        for i, edge in enumerate(star.edges)
    ]
    for edge in edges:
        edge.start()

    both = set(star.edge_addresses)
    figure(f"{kind}: ECMP route over two edges", wait_until(lambda: star.router.nexthops(prefix) == both, 30))

    # edge 1 enters graceful shutdown: its route carries 65535:0 and loses
    started = time.monotonic()
    edges[0].vtysh("configure terminal", "router bgp 65100", "bgp graceful-shutdown")
    wait_until(lambda: star.router.nexthops(prefix) == {star.edge_addresses[1]}, ROUTE_DEADLINE, what="GSHUT")
    figure(f"{kind}: graceful shutdown of edge 1 to one next hop", time.monotonic() - started)

    edges[0].vtysh("configure terminal", "router bgp 65100", "no bgp graceful-shutdown")
    wait_until(lambda: star.router.nexthops(prefix) == both, ROUTE_DEADLINE, what="back to ECMP")

    started = time.monotonic()
    edges[1].stop()
    wait_until(lambda: star.router.nexthops(prefix) == {star.edge_addresses[0]}, ROUTE_DEADLINE)
    figure(f"{kind}: edge 2 stopped to one next hop", time.monotonic() - started)


def test_routers_do_not_send_edges_anything_by_default(topology: Topology, tmp_path: Path) -> None:
    star = topology.star(edges=1)
    router = Bird(
        star.router,
        tmp_path / "router",
        asn=65000,
        router_id=star.router_edge_addresses[0],
        peers=[Peer(star.edge_addresses[0], 65100)],
        networks=["198.51.100.99/32"],
    )
    edge = Frr(
        star.edges[0],
        tmp_path / "edge",
        asn=65100,
        router_id=star.edge_addresses[0],
        peers=[Peer(star.router_edge_addresses[0], 65000, export=True)],
        networks=[f"{VIP}/32"],
    )
    router.start()
    edge.start()
    wait_until(lambda: star.router.nexthops(f"{VIP}/32") == {star.edge_addresses[0]}, 30)
    assert edge.bgp_route("198.51.100.99/32") == {}


# -- flow pinning -----------------------------------------------------------------------------


@pytest.mark.parametrize("pinning", [True, False], ids=["pinned", "unpinned"])
def test_flow_pinning_keeps_connections_on_their_edge(topology: Topology, pinning: bool) -> None:
    star = topology.star(edges=2, vip=f"{VIP}/32")
    first = NameServer(star.edges[0], VIP, 0, "edge1").start()
    second = NameServer(star.edges[1], VIP, first.port, "edge2").start()
    try:
        star.router.add_route(f"{VIP}/32", via=star.edge_addresses[0])
        if pinning:
            hops = pin_flows(star.router, star.next_hops, destinations=[f"{VIP}/32"])
            assert [hop.address for hop in hops] == sorted(star.edge_addresses, key=ipaddress.IPv4Address)
            assert pinned(star.router)

        with star.client.tcp_connect(VIP, first.port, timeout=3) as old:
            assert ask(old) == "edge1"

            star.router.replace_route(f"{VIP}/32", via=star.edge_addresses[1])

            with star.client.tcp_connect(VIP, first.port, timeout=3) as new:
                assert ask(new) == "edge2"
                if pinning:
                    for _ in range(3):
                        assert ask(old) == "edge1"
                        assert ask(new) == "edge2"
                    unpin_flows(star.router)
                    assert not pinned(star.router)
                # the old connection now reaches edge 2, which knows nothing of it
                with pytest.raises((ConnectionResetError, TimeoutError)):
                    ask(old)
                assert ask(new) == "edge2"
    finally:
        first.stop()
        second.stop()


# -- the fault proxy in namespaces ------------------------------------------------------------


def test_fault_proxy_between_namespaces(topology: Topology) -> None:
    """The fault proxy as a process inside the router's namespace (as a lab runs it), and in
    this process with its sockets in namespaces (as in-process tests can)."""
    star = topology.star(edges=1, vip=f"{VIP}/32")
    star.router.add_route(f"{VIP}/32", via=star.edge_addresses[0])
    server = NameServer(star.edges[0], VIP, 0, "edge1").start()
    try:
        process = star.router.popen(
            [sys.executable, "-m", "meshgate.faults", "--listen", f"{star.router_client_address}:0",
             "--target", f"{VIP}:{server.port}", "--admin", "127.0.0.1:0", "--delay", "0.05"],
            stdout=subprocess.PIPE, cwd=Path(__file__).parents[2],
        )  # fmt: skip
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 20)
        assert ready, "no ready line from python -m meshgate.faults"
        ports = json.loads(process.stdout.readline())
        with star.client.tcp_connect(star.router_client_address, ports["listening"]) as conn:
            started = time.monotonic()
            assert ask(conn) == "edge1"
            assert time.monotonic() - started >= 0.1
        stats = json.loads(star.router.run("curl", "-sf", f"http://127.0.0.1:{ports['admin']}/stats").stdout)
        assert stats["accepted"] == 1

        # in-process: listening in the router's namespace, connecting from it
        listener = star.router.tcp_listen(star.router_client_address)
        with ThreadedFaultProxy(
            (VIP, server.port), Faults(delay=0.02), sock=listener, upstream_socket=star.router.open_socket
        ) as proxy:
            with star.client.tcp_connect(star.router_client_address, proxy.port) as conn:
                started = time.monotonic()
                assert ask(conn) == "edge1"
                assert time.monotonic() - started >= 0.04
            assert proxy.stats()["accepted"] == 1
    finally:
        server.stop()


def test_flow_pinning_under_ecmp(topology: Topology) -> None:
    """Connections spread over two edges by ECMP stay with theirs when one edge's route goes."""
    star = topology.star(edges=2, vip=f"{VIP}/32")
    star.router.sysctl("net.ipv4.fib_multipath_hash_policy", 1)  # L4 hash: connections spread
    first = NameServer(star.edges[0], VIP, 0, "edge1").start()
    second = NameServer(star.edges[1], VIP, first.port, "edge2").start()
    connections = []
    try:
        star.router.add_route(f"{VIP}/32", via=star.edge_addresses)
        pin_flows(star.router, star.next_hops, destinations=[f"{VIP}/32"])
        connections = [star.client.tcp_connect(VIP, first.port, timeout=3) for _ in range(16)]
        served = [ask(conn) for conn in connections]
        assert set(served) == {"edge1", "edge2"}

        star.router.replace_route(f"{VIP}/32", via=star.edge_addresses[1])  # edge 1 withdrawn
        assert [ask(conn) for conn in connections] == served
        with star.client.tcp_connect(VIP, first.port, timeout=3) as new:
            assert ask(new) == "edge2"
    finally:
        for conn in connections:
            conn.close()
        first.stop()
        second.stop()


def test_bird_ignores_graceful_shutdown_unless_told(topology: Topology, tmp_path: Path) -> None:
    star = topology.star(edges=2)
    prefix = f"{VIP}/32"
    router = Bird(
        star.router, tmp_path / "router", asn=65000, router_id=star.router_edge_addresses[0],
        peers=[Peer(address, 65100) for address in star.edge_addresses], honour_graceful_shutdown=False,
    )  # fmt: skip
    router.start()
    edges = [
        Frr(edge, tmp_path / f"edge{i + 1}", asn=65100, router_id=star.edge_addresses[i],
            peers=[Peer(star.router_edge_addresses[i], 65000, export=True)], networks=[prefix])
        for i, edge in enumerate(star.edges)
    ]  # fmt: skip
    for edge in edges:
        edge.start()
    both = set(star.edge_addresses)
    wait_until(lambda: star.router.nexthops(prefix) == both, 30, what="ECMP")
    edges[0].vtysh("configure terminal", "router bgp 65100", "bgp graceful-shutdown")
    wait_until(
        lambda: "(65535,0)" in router.show(f"show route for {prefix} all"),
        ROUTE_DEADLINE,
        what="65535:0 received",
    )
    assert star.router.nexthops(prefix) == both  # received, not honoured: still ECMP
