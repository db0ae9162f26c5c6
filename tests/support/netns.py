"""Network namespace fixtures and topology helpers for tests that need root.

Use the fixtures by importing them (pytest registers them under their ``name``)::

    from tests.support.netns import namespaces_fixture, topology_fixture  # noqa: F401

    @pytest.mark.root
    @pytest.mark.slow
    def test_something(topology: Topology) -> None:
        star = topology.star(edges=2, vip="203.0.113.10/32")
        ...

Without root the tests are skipped, except under ``CI=true`` (CI runs as root and must run
them), where they fail. Every namespace made through the fixtures is deleted at teardown, with the
processes started in it. Link addresses are /30s from a 10.x.y.0/24 claimed for the run (a claim
file under ``/run/meshgate-netns`` naming this process), so parallel runs use different blocks.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from meshgate.netns import Namespace, Owner, veth
from meshgate.netns.namespace import STATE_DIR, read_owner


def require_root() -> None:
    """Skip unless root (fail under ``CI=true``, where the tests must run)."""
    if os.geteuid() == 0 and shutil.which("ip") and shutil.which("nft"):
        return
    message = "needs root and iproute2 + nftables (network namespaces)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


class NamespaceFactory:
    """Makes namespaces (``factory("edge")``) and deletes all of them at the end."""

    def __init__(self) -> None:
        self.made: list[Namespace] = []

    def __call__(self, role: str) -> Namespace:
        namespace = Namespace.create(role)
        self.made.append(namespace)
        return namespace

    def delete_all(self) -> None:
        errors: list[Exception] = []
        for namespace in reversed(self.made):
            try:
                namespace.delete()
            except Exception as exc:
                errors.append(exc)
        self.made.clear()
        if errors:
            raise ExceptionGroup("deleting namespaces", errors)


class AddressPool:
    """/30 links out of 10.x.y.0/24 blocks claimed for this process (a new block when one runs
    out). A block's claim file is released on ``close``; a dead owner's claim is taken over."""

    def __init__(self) -> None:
        self._blocks: list[ipaddress.IPv4Network] = []
        self._links: Iterator[ipaddress.IPv4Network] = iter(())

    def _claim_block(self) -> ipaddress.IPv4Network:
        STATE_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        for _ in range(200):
            block = ipaddress.IPv4Network(
                f"10.{secrets.choice(range(64, 250))}.{secrets.randbelow(256)}.0/24"
            )
            claim = STATE_DIR / f"pool-{block.network_address}"
            owner = read_owner(claim.name)
            if claim.exists() and (owner is None or owner.alive):
                continue
            with contextlib.suppress(FileNotFoundError):
                if owner is not None:  # a dead run's claim
                    claim.unlink()
            me = Owner.of(os.getpid())
            try:
                with claim.open("x") as out:
                    out.write(json.dumps({"owner_pid": me.pid, "owner_start": me.start_time}) + "\n")
            except FileExistsError:
                continue
            self._blocks.append(block)
            return block
        raise RuntimeError("no free 10.x.y.0/24 block for test links")

    def next_link(self) -> tuple[ipaddress.IPv4Interface, ipaddress.IPv4Interface]:
        """The two addresses of a fresh /30 (``10.x.y.1/30``, ``10.x.y.2/30``)."""
        subnet = next(self._links, None)
        if subnet is None:
            self._links = self._claim_block().subnets(new_prefix=30)
            subnet = next(self._links)
        first, second = list(subnet.hosts())
        return (
            ipaddress.IPv4Interface(f"{first}/{subnet.prefixlen}"),
            ipaddress.IPv4Interface(f"{second}/{subnet.prefixlen}"),
        )

    def close(self) -> None:
        for block in self._blocks:
            (STATE_DIR / f"pool-{block.network_address}").unlink(missing_ok=True)
        self._blocks.clear()


@dataclass
class Star:
    """A router with N edges and a client, all linked to the router.

    ``edge_addresses[i]`` is edge i's address on its link (the router's next hop towards it),
    ``router_edge_if[i]`` the router's interface towards edge i.
    """

    router: Namespace
    edges: list[Namespace]
    client: Namespace
    client_address: str
    router_client_address: str
    edge_addresses: list[str]
    router_edge_addresses: list[str]
    router_edge_if: list[str]
    vip: str | None = None

    @property
    def next_hops(self) -> dict[str, str]:
        """Edge address -> the router's interface towards it (for ``pin_flows``)."""
        return dict(zip(self.edge_addresses, self.router_edge_if, strict=True))


@dataclass
class Topology:
    """Links between namespaces, each a /30 from the run's pool, with per-namespace ``ethN``
    interface names."""

    namespaces: NamespaceFactory
    pool: AddressPool
    _next_if: dict[str, int] = field(default_factory=dict)
    _interfaces: dict[tuple[str, str], str] = field(default_factory=dict)

    def _ifname(self, ns: Namespace) -> str:
        index = self._next_if.get(ns.name, 0)
        self._next_if[ns.name] = index + 1
        return f"eth{index}"

    def link(self, a: Namespace, b: Namespace) -> tuple[str, str]:
        """A veth link between ``a`` and ``b`` with a /30 on it: (a's address, b's address)."""
        a_if, b_if = self._ifname(a), self._ifname(b)
        veth(a, a_if, b, b_if)
        a_addr, b_addr = self.pool.next_link()
        a.add_address(a_if, str(a_addr))
        b.add_address(b_if, str(b_addr))
        self._interfaces[(a.name, b.name)] = a_if
        self._interfaces[(b.name, a.name)] = b_if
        return str(a_addr.ip), str(b_addr.ip)

    def interface(self, of: Namespace, towards: Namespace) -> str:
        """``of``'s interface on its link to ``towards``."""
        return self._interfaces[(of.name, towards.name)]

    def star(self, edges: int, *, vip: str | None = None) -> Star:
        """A forwarding router, ``edges`` edge namespaces (``vip`` on each one's ``lo``) and a
        client whose default route is the router; edges route back to the client through the
        router. The router has no route to the VIP: add one (or run a BGP router there)."""
        router = self.namespaces("router")
        router.sysctl("net.ipv4.ip_forward", 1)
        client = self.namespaces("client")
        router_client, client_address = self.link(router, client)
        client.add_route("0.0.0.0/0", via=router_client)
        edge_list, edge_addresses, router_edge, router_if = [], [], [], []
        for index in range(edges):
            edge = self.namespaces(f"edge{index + 1}")
            router_address, edge_address = self.link(router, edge)
            edge.add_route(f"{client_address}/32", via=router_address)
            if vip is not None:
                edge.add_loopback_address(vip)
            edge_list.append(edge)
            edge_addresses.append(edge_address)
            router_edge.append(router_address)
            router_if.append(self.interface(router, edge))
        return Star(
            router=router,
            edges=edge_list,
            client=client,
            client_address=client_address,
            router_client_address=router_client,
            edge_addresses=edge_addresses,
            router_edge_addresses=router_edge,
            router_edge_if=router_if,
            vip=vip,
        )


@pytest.fixture(name="namespaces")
def namespaces_fixture() -> Iterator[NamespaceFactory]:
    """``namespaces(role) -> Namespace``; everything made is deleted at teardown."""
    require_root()
    factory = NamespaceFactory()
    try:
        yield factory
    finally:
        factory.delete_all()


@pytest.fixture(name="topology")
def topology_fixture(namespaces: NamespaceFactory) -> Iterator[Topology]:
    """Links with addresses from a per-run pool, on top of ``namespaces``."""
    pool = AddressPool()
    try:
        yield Topology(namespaces, pool)
    finally:
        pool.close()


class NameServer:
    """A TCP server in a namespace, run by threads of this process, that answers every line it
    receives with its name (one line). Tells which edge a connection reached."""

    def __init__(self, ns: Namespace, host: str, port: int, name: str) -> None:
        self.name = name
        self.listener = ns.tcp_listen(host, port)
        self.port: int = self.listener.getsockname()[1]
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, name=f"name-server-{name}", daemon=True)

    def start(self) -> NameServer:
        self._accepting.start()
        return self

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # stop() shut the listener down
            with self._lock:
                self._connections.add(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn.makefile("rb") as lines:
            for _ in lines:
                conn.sendall(self.name.encode() + b"\n")
        with self._lock:
            self._connections.discard(conn)
        conn.close()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        with self._lock:
            for conn in self._connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        self._accepting.join(5)
        for thread in self._threads:
            thread.join(5)


def ask(conn: socket.socket) -> str:
    """Send one line on ``conn`` and return the line answered (a ``NameServer``'s name)."""
    conn.sendall(b"who?\n")
    answer = b""
    while not answer.endswith(b"\n"):
        chunk = conn.recv(4096)
        if not chunk:
            raise ConnectionError("connection closed before the answer")
        answer += chunk
    return answer.decode().strip()
