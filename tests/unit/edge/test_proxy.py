"""The edge's data path in one process, without a control plane: an ``EdgeProxy`` with a real
mesh identity and a hand-made ``EdgeRuntime`` whose global service has two zones, each an
in-process mTLS HTTP server standing for the zone's ingress and local proxy. Public ports are
bound on loopback through a ``listen`` override (VIP port + portOffset), as in the demo."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import pytest

from edge.config import EdgeConfig, parse
from edge.proxy import EdgeProxy
from edge.runtime import Certificate, EdgeRuntime, GlobalService, PublicPort, ServingZone, ZoneEndpoint
from meshgate.pki.ca import CertificateAuthority, create_root_ca
from meshgate.pki.keys import certificate_to_pem, private_key_to_pem
from meshgate.proxy.identity import TlsIdentity
from meshgate.proxy.stats import Stats
from tests.unit.edge.public_certs import PublicCert, self_signed
from tests.unit.pki.pki_certs import leaf_for, zone_authority
from tests.unit.proxy.test_http_engine import read_response

TD = "mesh.example"
VIP = "203.0.113.10"  # not a local address: the listen override binds loopback instead
WEB_ID = f"spiffe://{TD}/svc/web"
EDGE_ID = f"spiffe://{TD}/zone/paris/edge/edge-a1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def free_base(*public_ports: int) -> int:
    """A port offset that puts every one of ``public_ports`` on a free loopback port."""
    for _ in range(100):
        base = free_port() - public_ports[0]
        with contextlib.ExitStack() as held:
            try:
                for port in public_ports:
                    s = held.enter_context(socket.socket())
                    s.bind(("127.0.0.1", base + port))
            except (OSError, OverflowError):  # taken, or beyond 65535
                continue
            return base
    raise RuntimeError("no free ports")


@dataclass
class Pki:
    root: CertificateAuthority
    zones: dict[str, CertificateAuthority]

    def identity(self, zone: str, spiffe_id: str) -> TlsIdentity:
        ca = self.zones[zone]
        leaf, key = leaf_for(ca, spiffe_id, now=datetime.now(UTC))
        return TlsIdentity(
            ca.presented_chain_pem(leaf), private_key_to_pem(key), certificate_to_pem(self.root.certificate)
        )


@pytest.fixture(scope="module")
def pki() -> Pki:
    root = create_root_ca(TD, mesh="default", now=datetime.now(UTC))
    return Pki(root, {z: zone_authority(root, z, now=datetime.now(UTC)) for z in ("paris", "frankfurt")})


@dataclass
class ZoneServer:
    """A zone's way in (ingress and local proxy in one): mTLS with the service's identity,
    client certificate required; answers every request with ``status`` and its zone's name."""

    zone: str
    identity: TlsIdentity
    status: int = 200
    snis: list[str | None] = field(default_factory=list)
    heads: list[bytes] = field(default_factory=list)
    clients: list[str] = field(default_factory=list)  # SPIFFE IDs of the callers' certificates
    server: asyncio.Server | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> int:
        def admit(sni: str | None) -> bool:
            self.snis.append(sni)
            return True

        self.identity.admit = admit
        self.server = await asyncio.start_server(
            self.handle, "127.0.0.1", 0, ssl=self.identity.front_server_context
        )
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            self.clients.append(str(self.identity.peer_identity(writer.transport).spiffe_id))
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                body = self.zone.encode()
                writer.write(
                    b"HTTP/1.1 %d X\r\ncontent-length: %d\r\n\r\n%s" % (self.status, len(body), body)
                )
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self.tasks.discard(task)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        if self.tasks:  # the edge closed its pooled connections: each handler sees its EOF
            await asyncio.wait(self.tasks, timeout=2.0)


def web(endpoints: dict[str, tuple[int, ...]], *, ports: tuple[PublicPort, ...] = (PublicPort("http", 80, "http"),),
        certificate: str | None = None) -> GlobalService:  # fmt: skip
    """The ``web`` global service served by ``endpoints`` (zone -> ingress ports), paris nearest."""
    distance = {"paris": 0.0, "frankfurt": 479.0}
    zones = tuple(
        ServingZone(zone, 0, None, distance[zone], 1,
                    tuple(ZoneEndpoint("127.0.0.1", p, f"web.{zone}.svc.meshgate") for p in ports_))
        for zone, ports_ in endpoints.items()
    )  # fmt: skip
    return GlobalService(
        "web", "web", WEB_ID, ("www.example.com", "*.example.org"), (VIP,), ports, certificate, zones
    )


def runtime(service: GlobalService, public: PublicCert | None = None) -> EdgeRuntime:
    """Version 1 with ``service`` and, if given, ``public`` as the Certificate ``web-tls``."""
    certificates = {} if public is None else {"web-tls": document(public)}
    return EdgeRuntime(1, TD, (), None, {service.name: service}, certificates)


def document(public: PublicCert) -> Certificate:
    return Certificate("web-tls", public.chain_pem.decode(), public.key_pem.decode())


@dataclass
class Edge:
    proxy: EdgeProxy
    base: int  # the VIP's port p is served on 127.0.0.1:base+p
    zones: dict[str, ZoneServer]

    async def request(self, raw: bytes, port: int = 80) -> tuple[bytes, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.base + port)
        try:
            writer.write(raw)
            return await read_response(reader)
        finally:
            writer.close()

    async def get(self, host: str = "www.example.com", path: str = "/") -> tuple[bytes, bytes]:
        return await self.request(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())


EdgeFactory = Callable[..., Awaitable[Edge]]


@pytest.fixture
async def edge(pki: Pki) -> AsyncIterator[EdgeFactory]:
    made: list[Edge] = []

    async def make(*, settings: dict[str, Any] | None = None, statuses: dict[str, int] | None = None,
                   down: tuple[str, ...] = (), public: PublicCert | None = None, **service: Any) -> Edge:  # fmt: skip
        base = free_base(80, 443)
        config: EdgeConfig = parse(
            {"name": "edge-a1", "listen": {"address": "127.0.0.1", "portOffset": base}, **(settings or {})}
        )
        zones = {
            z: ZoneServer(z, pki.identity(z, WEB_ID), (statuses or {}).get(z, 200))
            for z in ("paris", "frankfurt")
        }
        endpoints: dict[str, tuple[int, ...]] = {
            z: (free_port() if z in down else await s.start(),) for z, s in zones.items()
        }
        proxy = EdgeProxy(config, pki.identity("paris", EDGE_ID), Stats(), "paris")
        proxy.apply(runtime(web(endpoints, **service), public))
        await proxy.reconcile()
        made.append(Edge(proxy, base, zones))
        return made[-1]

    yield make
    for e in made:
        listeners = e.proxy.close_listeners()
        for listener in listeners:
            await listener.wait_drained(1.0)
        e.proxy.stop()
        for z in e.zones.values():
            await z.stop()


async def test_reconcile_listens_for_the_vip_on_the_override_address_and_port(edge: EdgeFactory) -> None:
    e = await edge()
    [(key, entry)] = e.proxy.listeners.items()
    assert key == ("127.0.0.1", e.base + 80)
    assert (entry.protocol, entry.services, entry.vips, entry.error) == ("http", ["web"], {VIP}, "")
    assert entry.listener is not None
    assert e.proxy.vip_listeners() == {VIP: [entry]}
    head, body = await e.get()
    assert head.startswith(b"HTTP/1.1 200")
    assert body == b"paris"  # the nearest zone (none measured yet: by distance)


async def test_requests_are_routed_by_host(edge: EdgeFactory) -> None:
    e = await edge()
    assert (await e.get("www.example.com:80"))[1] == b"paris"  # the port is not part of the name
    assert (await e.get("WWW.EXAMPLE.COM"))[1] == b"paris"
    assert (await e.get("shop.example.org"))[1] == b"paris"  # *.example.org
    for unknown in ("example.org", "a.shop.example.org", "api.example.com", "203.0.113.10"):
        head, _ = await e.get(unknown)
        assert head.startswith(b"HTTP/1.1 404"), unknown
    assert len(e.zones["paris"].heads) == 3  # nothing else reached a zone


async def test_responses_name_the_edge_and_the_zone_unless_headers_are_off(edge: EdgeFactory) -> None:
    e = await edge()
    head, _ = await e.get()
    assert b"\r\nx-meshgate-edge: edge-a1\r\n" in head
    assert b"\r\nx-meshgate-zone: paris\r\n" in head
    quiet = await edge(settings={"headers": False})
    head, body = await quiet.get()
    assert body == b"paris"
    assert b"x-meshgate" not in head.lower()


async def test_upstream_connections_send_the_zone_endpoints_sni_and_the_edges_identity(
    edge: EdgeFactory,
) -> None:
    e = await edge()
    await e.get()
    assert e.zones["paris"].snis == ["web.paris.svc.meshgate"]
    assert e.zones["paris"].clients == [EDGE_ID]
    head = e.zones["paris"].heads[0].lower()
    assert head.startswith(b"get / http/1.1\r\nhost: www.example.com\r\n")
    assert b"\r\nx-forwarded-proto: http\r\n" in head
    assert b"\r\nx-forwarded-for: 127.0.0.1\r\n" in head


async def test_a_zone_that_cannot_be_reached_hands_over_to_the_next(edge: EdgeFactory) -> None:
    e = await edge(down=("paris",), settings={"probe": {"ejectAfter": 2}})
    route = e.proxy.routes["web"]
    for _ in range(4):
        head, body = await e.get()
        assert head.startswith(b"HTTP/1.1 200")
        assert body == b"frankfurt"
        assert b"\r\nx-meshgate-zone: frankfurt\r\n" in head
    paris = e.proxy.book.get("web", "paris")
    assert paris.ejected
    # once ejected, requests go straight to the next zone: no more connects to paris
    assert route.stats.connect_failures == 2
    assert paris.failures == 2


async def test_a_zone_answering_503_hands_an_idempotent_request_to_the_next(edge: EdgeFactory) -> None:
    e = await edge(statuses={"paris": 503})
    head, body = await e.get()
    assert body == b"frankfurt"
    assert b"\r\nx-meshgate-zone: frankfurt\r\n" in head
    assert len(e.zones["paris"].heads) == 1
    assert e.proxy.book.get("web", "paris").failures == 1
    head, body = await e.request(b"POST / HTTP/1.1\r\nHost: www.example.com\r\nContent-Length: 2\r\n\r\nhi")
    assert head.startswith(b"HTTP/1.1 503")
    assert body == b"paris"


async def test_drain_makes_responses_close_their_connection(edge: EdgeFactory) -> None:
    e = await edge()
    reader, writer = await asyncio.open_connection("127.0.0.1", e.base + 80)
    try:
        request = b"GET / HTTP/1.1\r\nHost: www.example.com\r\n\r\n"
        writer.write(request)
        head, _ = await read_response(reader)
        assert b"connection: close" not in head.lower()
        e.proxy.drain()  # this connection is idle: closed at once
        assert await reader.read() == b""
    finally:
        writer.close()
    head, _ = await e.get()  # a new connection while draining: answered, then closed
    assert b"\r\nconnection: close\r\n" in head.lower()
    e.proxy.undrain()
    head, _ = await e.get()
    assert b"connection: close" not in head.lower()


async def test_an_https_port_terminates_tls_with_the_services_certificate(edge: EdgeFactory) -> None:
    cert = self_signed("www.example.com")
    e = await edge(ports=(PublicPort("https", 443, "https"),), certificate="web-tls", public=cert)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cadata=cert.chain_pem.decode())
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", e.base + 443, ssl=context, server_hostname="www.example.com"
    )
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: www.example.com\r\n\r\n")
        head, body = await read_response(reader)
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 200")
    assert body == b"paris"
    assert b"\r\nx-forwarded-proto: https\r\n" in e.zones["paris"].heads[0].lower()


async def test_a_bad_certificate_update_keeps_the_old_one_and_reconcile_goes_on(edge: EdgeFactory) -> None:
    cert = self_signed("www.example.com")
    e = await edge(ports=(PublicPort("https", 443, "https"),), certificate="web-tls", public=cert)
    broken = replace(self_signed("www.example.com"), key_pem=cert.key_pem)  # another certificate's key
    e.proxy.apply(replace(e.proxy.runtime, version=2, certificates={"web-tls": document(broken)}))
    await e.proxy.reconcile()  # must not raise: the controller reconciles before every health step
    [entry] = e.proxy.listeners.values()
    assert entry.listener is not None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cadata=cert.chain_pem.decode())
    _, writer = await asyncio.open_connection(
        "127.0.0.1", e.base + 443, ssl=context, server_hostname="www.example.com"
    )
    assert writer.get_extra_info("ssl_object").getpeercert(binary_form=True) == cert.der
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def test_an_https_port_whose_certificate_is_refused_reports_it_and_reconcile_goes_on(
    edge: EdgeFactory,
) -> None:
    cert, other = self_signed("www.example.com"), self_signed("www.example.com")
    broken = replace(cert, key_pem=other.key_pem)
    e = await edge(ports=(PublicPort("https", 443, "https"),), certificate="web-tls", public=broken)
    [entry] = e.proxy.listeners.values()
    assert entry.listener is None
    assert entry.error.startswith("certificate refused: ")
    await e.proxy.reconcile()  # tried again, refused again, without raising
    assert entry.listener is None
    assert entry.error.startswith("certificate refused: ")
    e.proxy.apply(replace(e.proxy.runtime, version=2, certificates={"web-tls": document(cert)}))
    await e.proxy.reconcile()
    [fixed] = e.proxy.listeners.values()
    assert fixed.listener is not None
    assert fixed.error == ""


async def test_a_service_removed_stops_its_listener(edge: EdgeFactory) -> None:
    e = await edge()
    assert (await e.get())[1] == b"paris"
    e.proxy.apply(replace(e.proxy.runtime, version=2, services={}))
    await e.proxy.reconcile()
    assert e.proxy.listeners == {}
    with pytest.raises(ConnectionRefusedError):
        await e.get()


async def test_a_port_pushed_beyond_65535_by_the_offset_is_reported_not_wrapped(edge: EdgeFactory) -> None:
    e = await edge(settings={"listen": {"address": "127.0.0.1", "portOffset": 65500}})
    [entry] = e.proxy.listeners.values()
    assert entry.port == 65580
    assert entry.listener is None
    assert entry.error == "cannot listen: port 65580 is beyond 65535 (listen.portOffset too large)"
    await e.proxy.reconcile()  # again, without raising
    assert entry.error.startswith("cannot listen")
