"""The local proxy and the ingress in one process, on loopback: locality failover between
groups, refusal before the handshake when no instance is healthy, and the ingress's routing by
SNI. Real sockets and TLS; no control plane (configurations are built by hand)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from meshgate.pki.ca import CertificateAuthority, create_root_ca
from meshgate.pki.keys import certificate_to_pem, private_key_to_pem
from meshgate.proxy.identity import TlsIdentity
from meshgate.proxy.stats import Stats
from tests.support.workloads import Workload
from tests.unit.pki.pki_certs import leaf_for, zone_authority
from zones.config import parse
from zones.ingress import Ingress
from zones.local import LocalProxy
from zones.runtime import ClusterConfig, Group, RouteConfig, Runtime, Target

TD = "mesh.example"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def zone() -> CertificateAuthority:
    root = create_root_ca(TD, mesh="default", now=datetime.now(UTC))
    return zone_authority(root, "one", now=datetime.now(UTC))


def identity(zone: CertificateAuthority, service: str) -> TlsIdentity:
    leaf, key = leaf_for(zone, f"spiffe://{TD}/svc/{service}", now=datetime.now(UTC))
    return TlsIdentity(zone.presented_chain_pem(leaf), private_key_to_pem(key), certificate_to_pem(zone.root))


@dataclass
class Pair:
    client: LocalProxy  # a's proxy, outbound to b on `port`
    port: int
    servers: dict[str, LocalProxy]  # b's proxies by zone
    ingress: Ingress  # zone two's
    workloads: dict[str, Workload]


async def greet(port: int, line: str) -> str:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as exc:
        return f"error: {exc}"
    try:
        writer.write(line.encode() + b"\n")
        return (await asyncio.wait_for(reader.readline(), 5)).decode().strip()
    except (OSError, TimeoutError) as exc:
        return f"error: {exc!r}"
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def local_config(
    service: str, instance_port: int, outbounds: list[dict[str, object]] | None = None
) -> object:
    return {
        "name": f"{service}-x", "service": service,
        "inbound": {"address": "127.0.0.1", "port": free_port()},
        "instances": [{"address": "127.0.0.1", "port": instance_port}],
        "outbounds": outbounds or [],
    }  # fmt: skip


@pytest.fixture
async def pair(zone: CertificateAuthority) -> AsyncIterator[Pair]:
    workloads = {z: Workload(f"b-{z}").start() for z in ("one", "two")}
    out = free_port()
    client = LocalProxy(
        parse(local_config("a", 9, [{"service": "b", "port": out}]), "local"), identity(zone, "a"), Stats()
    )
    servers = {
        z: LocalProxy(parse(local_config("b", w.port), "local"), identity(zone, "b"), Stats())
        for z, w in workloads.items()
    }
    ingress = Ingress(
        parse({"name": "in", "listen": {"address": "127.0.0.1", "port": free_port()}}, "ingress"),
        "two",
        Stats(),
    )
    for proxy in (client, *servers.values(), ingress):
        await proxy.start(reuse_port=False)
    for server in servers.values():
        server.set_health({server.config.instances[0]: True})
    b_two = servers["two"].inbound.port
    ingress.apply(Runtime(1, TD, (), routes={
        "b.two.svc.meshgate": RouteConfig("b.two.svc.meshgate", "b", (Target("127.0.0.1", b_two),))}))  # fmt: skip
    groups = (
        Group("one", (Target("127.0.0.1", servers["one"].inbound.port, "b.one.svc.meshgate"),)),
        Group("two", (Target("127.0.0.1", ingress.listener.port, "b.two.svc.meshgate"),)),
    )
    client.apply(Runtime(1, TD, (), {"b": ClusterConfig("b", f"spiffe://{TD}/svc/b", groups)}))
    try:
        yield Pair(client, out, servers, ingress, workloads)
    finally:
        for proxy in (client, *servers.values(), ingress):
            for listener in proxy.listeners:
                listener.close()
                await listener.wait_drained(1.0)
        for w in workloads.values():
            w.stop()


async def test_the_local_group_serves_and_an_unhealthy_one_hands_over_to_the_next_zone(pair: Pair) -> None:
    assert await greet(pair.port, "hi") == "b-one hi"
    one = pair.servers["one"]
    one.set_health({one.config.instances[0]: False})
    # Refused at the handshake: the client moves on to zone two's ingress at once.
    assert await greet(pair.port, "moved") == "b-two moved"
    assert one.inbound.stats.accepted == 1  # the refused handshakes never became connections
    assert one.tls.refused_handshakes >= 1
    one.set_health({one.config.instances[0]: True})
    assert await greet(pair.port, "back") == "b-one back"


async def test_a_server_with_the_wrong_identity_is_refused(pair: Pair, zone: CertificateAuthority) -> None:
    groups = (Group("one", (Target("127.0.0.1", pair.servers["one"].inbound.port, "b.one.svc.meshgate"),)),)
    pair.client.apply(Runtime(2, TD, (), {"b": ClusterConfig("b", f"spiffe://{TD}/svc/not-b", groups)}))
    assert (await greet(pair.port, "x")).startswith("error")
    assert pair.client.services["b"].stats.identity_failures >= 1
    assert b"x\n" not in b"".join(pair.workloads["one"].received)


async def test_the_ingress_routes_only_names_it_knows(pair: Pair, zone: CertificateAuthority) -> None:
    context = identity(zone, "a").client_context

    async def handshake(sni: str) -> bool:
        try:
            _, writer = await asyncio.open_connection(
                "127.0.0.1", pair.ingress.listener.port, ssl=context, server_hostname=sni
            )
        except (OSError, ssl.SSLError):
            return False
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
        return True

    assert await handshake("b.two.svc.meshgate")
    assert not await handshake("b.one.svc.meshgate")  # another zone's name
    assert not await handshake("c.two.svc.meshgate")  # no route
    assert not await handshake("example.com")
    refused = pair.ingress.listener.stats.refused
    assert refused.get("bad_sni", 0) == 2
    assert refused.get("unknown_service", 0) == 1
