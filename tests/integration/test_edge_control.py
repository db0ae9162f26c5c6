"""The control side of edges with real processes: a global CP and two zone CPs (paris, frankfurt).
An edge enrolls at paris's proxy-facing listener as a client would (``zones.enroll``), renews,
receives its configuration over the sync stream and registers its EdgeStatus; the operator
drains and undrains it with ``meshgate edge`` and reads its status; invalid Edges are refused
at apply time with their paths. One mesh serves the whole module."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from edge.runtime import build
from meshgate.cli.client import Client
from meshgate.cli.edge_commands import drain_spec, update_edge
from meshgate.cli.settings import Settings
from meshgate.demo.resources import public_certificate
from meshgate.pki.keys import certificate_from_pem
from meshgate.sync.messages import Hello
from meshgate.sync.runner import run_sink
from meshgate.sync.sink import Change, Rejected, SinkSession
from tests.support.factories import doc
from tests.support.processes import Admin, GlobalCPProcess, ZoneCPProcess, cli, cli_json, http_json, wait_for
from zones.enroll import (
    EnrollError,
    ZoneCP,
    check_zone_cp,
    enroll,
    mtls_context,
    open_channel,
    renew,
    request,
)
from zones.runtime import BadConfig
from zones.state import Identity

pytestmark = pytest.mark.slow

BGP = {"localASN": 65001, "routerID": "10.0.0.1", "neighbors": [{"address": "10.0.0.254", "peerASN": 65000}]}


@dataclass
class Mesh:
    root: Path
    cp: GlobalCPProcess
    admin: Admin
    zones: dict[str, ZoneCPProcess]
    certificate: tuple[str, str]
    trust_domain: str = ""

    def zone_cp(self, zone: str) -> ZoneCP:
        return ZoneCP.parse(self.zones[zone].proxy_url)

    def enroll(self, zone: str, token: str, role: str, name: str = "", service: str = "") -> Identity:
        """Enroll as a client would; retried while the zone has not yet received the token key."""

        async def attempt() -> Identity:
            deadline = time.monotonic() + 20
            while True:
                try:
                    return await enroll(self.zone_cp(zone), token, role, service, name, None)
                except EnrollError as exc:
                    if not exc.retry or time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.1)

        return asyncio.run(attempt())

    def register(self, zone: str, identity: Identity, resource: dict[str, Any]) -> dict[str, Any]:
        async def attempt() -> dict[str, Any]:
            channel = await open_channel(self.zone_cp(zone), mtls_context(identity))
            return await request(channel, {"type": "register", "resource": resource})

        return asyncio.run(attempt())

    def report(self, zone: str, token: str, resource: dict[str, Any]) -> None:
        """A registration through the zone CP's HTTP API with a join token (the proxies'
        other way in), for Dataplanes and ZoneIngresses the edge's configuration is built from."""
        plural = {"Dataplane": "dataplanes", "ZoneIngress": "zoneingresses"}[resource["kind"]]

        def attempt() -> bool:
            call = urllib.request.Request(
                f"{self.zones[zone].url}/api/v1/{plural}", data=json.dumps(resource).encode(), method="POST",
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            )  # fmt: skip
            status, body = http_json(call)
            if status == 503:  # the zone has not received the token key yet
                return False
            assert status in (200, 201), body
            return True

        wait_for(attempt, 20, f"{resource['kind']}/{resource['metadata']['name']} registered")

    def edge_doc(self, name: str) -> dict[str, Any]:
        status, body = self.admin.call("GET", f"/api/v1/edges/{name}")
        assert status == 200, body
        return dict(body)


def https_service(name: str, vip: str, certificate: str, **spec: Any) -> dict[str, Any]:
    return doc("GlobalService", name, {
        "service": "web", "hostnames": [f"{name}.example.com"], "vips": [vip],
        "ports": [{"name": "https", "port": 443, "protocol": "https", "targetPort": "http"},
                  {"name": "http", "port": 80, "protocol": "http", "targetPort": "http"}],
        "certificateRef": certificate, **spec,
    })  # fmt: skip


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    root = tmp_path_factory.mktemp("edge-control")
    cp = GlobalCPProcess(root / "global").start()
    admin = Admin(cp)
    cert, key = public_certificate(datetime.now(UTC))
    tls = {"tls.crt": cert, "tls.key": key}
    admin.apply(
        doc("Zone", "paris", {"location": {"latitude": 48.86, "longitude": 2.35}}),
        doc("Zone", "frankfurt", {"location": {"latitude": 50.11, "longitude": 8.68}}),
        doc("Service", "web", {"ports": [{"name": "http", "port": 8080, "protocol": "http"}]}),
        doc("Secret", "web-tls", {"type": "tls", "data": tls, "zones": ["paris"]}),
        doc("Secret", "blog-tls", {"type": "tls", "data": tls, "zones": ["frankfurt"]}),
        https_service("web", "203.0.113.10", "web-tls"),
        https_service("blog", "203.0.113.11", "blog-tls",
                      zones=[{"zone": "frankfurt", "priority": 0}, {"zone": "paris", "priority": 1}]),
        doc("Edge", "edge-1", {"zone": "paris", "bgp": BGP}),
        doc("Edge", "edge-9", {"zone": "frankfurt", "bgp": BGP}),
    )  # fmt: skip
    zones = {
        z: ZoneCPProcess(root / z, z, cp.zone_url, admin.token("zone", z)).start()
        for z in ("paris", "frankfurt")
    }
    mesh = Mesh(root, cp, admin, zones, (cert, key))
    try:
        # An instance of web at each zone, each zone with an ingress.
        for zone, address in (("paris", "192.0.2.1"), ("frankfurt", "192.0.2.2")):
            proxy, ingress = (
                admin.token("proxy", zone, reusable=True),
                admin.token("ingress", zone, reusable=True),
            )
            mesh.report(zone, proxy, doc("Dataplane", f"{zone}.web-1", {
                "zone": zone, "role": "local", "address": "10.1.0.5", "port": 10001,
                "workloads": [{"service": "web", "address": "127.0.0.1", "port": 8080, "health": "healthy"}]}))  # fmt: skip
            mesh.report(zone, ingress, doc("Dataplane", f"{zone}.ingress-1",
                                           {"zone": zone, "role": "ingress", "address": address, "port": 10002}))  # fmt: skip
            mesh.report(zone, ingress, doc("ZoneIngress", f"{zone}.ingress-1",
                                           {"zone": zone, "address": address, "port": 10002}))  # fmt: skip
        yield mesh
    finally:
        for zone in zones.values():
            zone.kill()
        cp.kill()


class EdgeStream:
    """An edge's configuration stream: every change applied to ``documents`` and read by the
    edge's own reader (``edge.runtime.build``) as the edge would."""

    def __init__(self) -> None:
        self.documents: dict[str, dict[str, Any]] = {}
        self.versions: list[int] = []
        self.refused: list[str] = []
        self._changed = asyncio.Event()

    async def _apply(self, change: Change) -> None:
        documents = dict(self.documents)
        for upsert in change.upserts:
            documents[upsert.key] = upsert.doc
        for key in change.removals:
            documents.pop(key, None)
        try:
            build(change.version, documents)
        except BadConfig as exc:
            self.refused.append(str(exc))
            raise Rejected(str(exc)) from None
        self.documents = documents
        self.versions.append(change.version)
        self._changed.set()

    async def until(self, condition: Callable[[dict[str, dict[str, Any]]], Any], timeout: float = 10) -> Any:
        async with asyncio.timeout(timeout):
            while not (value := condition(self.documents)):
                self._changed.clear()
                await self._changed.wait()
        return value


@contextlib.asynccontextmanager
async def edge_stream(zone_cp: ZoneCP, identity: Identity) -> AsyncIterator[EdgeStream]:
    stream = EdgeStream()
    channel = await open_channel(zone_cp, mtls_context(identity))
    roots = [certificate_from_pem(pem.encode()) for pem in identity.roots_pem]
    check_zone_cp(channel, roots, identity.trust_domain, identity.zone)
    await channel.send('{"type":"sync"}')
    task = asyncio.create_task(run_sink(channel, SinkSession(stream._apply), Hello({}, 0)))
    try:
        yield stream
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        await channel.close()
    assert stream.refused == []


def zones_of(docs: dict[str, dict[str, Any]], service: str) -> list[tuple[Any, ...]]:
    gs = docs.get(f"GlobalService/{service}")
    if gs is None:
        return []
    return [
        (z["zone"], z["priority"], z["healthy"], [f"{e['address']}:{e['port']}/{e['sni']}" for e in z["endpoints"]])
        for z in gs["spec"]["zones"]
    ]  # fmt: skip


@pytest.fixture(scope="module")
def edge_1(mesh: Mesh) -> Identity:
    identity = mesh.enroll("paris", mesh.admin.token("edge", "paris"), "edge", "edge-1")
    mesh.trust_domain = identity.trust_domain
    return identity


def test_an_edge_enrolls_renews_and_receives_its_configuration(mesh: Mesh, edge_1: Identity) -> None:
    assert edge_1.spiffe_id == f"spiffe://{edge_1.trust_domain}/zone/paris/edge/edge-1"
    assert edge_1.zone == "paris"
    renewed = asyncio.run(renew(mesh.zone_cp("paris"), edge_1, 60))
    assert renewed.spiffe_id == edge_1.spiffe_id
    assert renewed.chain_pem != edge_1.chain_pem

    def complete(docs: dict[str, dict[str, Any]]) -> bool:
        web = zones_of(docs, "web")
        return len(web) == 2 and all(healthy == 1 and endpoints for _z, _p, healthy, endpoints in web)

    async def receive() -> dict[str, dict[str, Any]]:
        async with edge_stream(mesh.zone_cp("paris"), renewed) as stream:  # the renewed certificate serves
            await stream.until(complete, 20)
            return stream.documents

    docs = asyncio.run(receive())
    assert set(docs) == {
        "Trust/mesh",
        "Edge/edge-1",
        "GlobalService/web",
        "GlobalService/blog",
        "Certificate/web-tls",
    }
    assert docs["Edge/edge-1"]["spec"] == {"zone": "paris", "bgp": {**BGP, "holdTime": 90, "communities": [], "med": 0,
                                           "neighbors": [{**BGP["neighbors"][0], "description": ""}]}}  # fmt: skip
    assert zones_of(docs, "web") == [  # paris from its own Dataplanes, frankfurt from the global table
        ("paris", 0, 1, ["192.0.2.1:10002/web.paris.svc.meshgate"]),
        ("frankfurt", 0, 1, ["192.0.2.2:10002/web.frankfurt.svc.meshgate"]),
    ]
    distances = [z["distance"] for z in docs["GlobalService/web"]["spec"]["zones"]]
    assert distances[0] == 0.0
    assert distances[1] == pytest.approx(479, abs=5)
    web = docs["GlobalService/web"]["spec"]
    assert web["identity"] == f"spiffe://{edge_1.trust_domain}/svc/web"
    assert web["certificate"] == "web-tls"
    assert docs["Certificate/web-tls"]["spec"] == {
        "certificate": mesh.certificate[0],
        "key": mesh.certificate[1],
    }
    blog = docs["GlobalService/blog"]["spec"]
    assert blog["certificate"] is None  # its Secret goes to frankfurt only: no dangling name here
    assert [z["zone"] for z in blog["zones"]] == ["frankfurt", "paris"]
    assert docs["Trust/mesh"]["spec"]["trustDomain"] == edge_1.trust_domain


def test_enrollment_refusals(mesh: Mesh) -> None:
    with pytest.raises(EnrollError, match=r"\(403\): a proxy token cannot enroll an edge"):
        mesh.enroll("paris", mesh.admin.token("proxy", "paris"), "edge", "edge-2")
    with pytest.raises(EnrollError, match=r"\(403\): an edge token cannot enroll an ingress"):
        mesh.enroll("paris", mesh.admin.token("edge", "paris"), "ingress", "edge-2")
    with pytest.raises(EnrollError, match=r"\(400\): an edge has a name \(a DNS label\)"):
        mesh.enroll("paris", mesh.admin.token("edge", "paris"), "edge", "Edge_2")
    # A token for frankfurt is not even shown to paris's zone CP.
    with pytest.raises(EnrollError, match=r"zone/paris/cp is not the zone CP expected"):
        mesh.enroll("paris", mesh.admin.token("edge", "frankfurt"), "edge", "edge-2")
    once = mesh.admin.token("edge", "paris")
    mesh.enroll("paris", once, "edge", "edge-3")
    with pytest.raises(EnrollError, match="already used"):
        mesh.enroll("paris", once, "edge", "edge-4")


def status_doc(name: str, zone: str = "paris", **spec: Any) -> dict[str, Any]:
    return doc("EdgeStatus", name, {"zone": zone, **spec})


def test_an_edge_registers_its_own_status_and_nothing_else(mesh: Mesh, edge_1: Identity) -> None:
    status = status_doc(
        "edge-1",
        sessions=[{"neighbor": "10.0.0.254", "state": "established", "flaps": 1},
                  {"neighbor": "10.0.0.253", "state": "active", "reason": "connection refused", "flaps": 0}],
        announcements=[{"vip": "203.0.113.10", "state": "announced"}],
        speaker={"running": True, "restarts": 1, "error": ""},
        drain={"phase": "keepalive-off", "startedAt": "2026-01-31T12:00:00Z", "activeConnections": 12},
        zones=[{"zone": "paris", "reachable": True, "rttMs": 0.4, "ejected": False},
               {"zone": "frankfurt", "reachable": False, "rttMs": None, "ejected": True}],
        configAgeSeconds=1.5,
    )  # fmt: skip
    assert mesh.register("paris", edge_1, status) == {"type": "registered", "outcome": "created"}
    refusals = {
        "another edge's name": status_doc("edge-9"),
        "another zone": status_doc("edge-1", "frankfurt"),
        "a Dataplane": doc("Dataplane", "paris.edge-1", {"zone": "paris", "role": "local", "address": "10.0.0.1", "port": 1}),
        "a ZoneIngress": doc("ZoneIngress", "paris.edge-1", {"zone": "paris", "address": "10.0.0.1", "port": 1}),
    }  # fmt: skip
    for what, resource in refusals.items():
        with pytest.raises(EnrollError, match=r"\(403\)") as refused:
            mesh.register("paris", edge_1, resource)
        assert "may not write" in str(refused.value) or "zone CP of 'paris'" in str(refused.value), what
    # A local proxy may not write an edge's status either.
    proxy = mesh.enroll("paris", mesh.admin.token("proxy", "paris"), "local", service="web")
    with pytest.raises(EnrollError, match=r"\(403\).*may not write EdgeStatus/edge-1"):
        mesh.register("paris", proxy, status_doc("edge-1"))

    # The status reaches the global CP, where the operator reads it.
    env = mesh.cp.cli_env()
    wait_for(lambda: "edge-1" in mesh.admin.names("edgestatuses"), 10, "EdgeStatus at the global CP")
    table = cli(["edge", "status"], env)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:6] == ["NAME", "ZONE", "SESSIONS", "UP", "ANNOUNCED", "DRAIN"]
    assert lines[1].split()[:5] == ["edge-1", "paris", "1/2", "203.0.113.10", "keepalive-off"]
    one = cli_json(["edge", "status", "edge-1"], env)
    assert isinstance(one, dict)
    assert one["spec"]["zones"][1] == {"zone": "frankfurt", "reachable": False, "ejected": True}
    assert one["spec"]["sessions"][1]["reason"] == "connection refused"
    assert one["spec"]["speaker"] == {"running": True, "restarts": 1, "error": ""}
    assert one["spec"]["configAgeSeconds"] == 1.5
    listing = cli(["edge", "status", "-o", "yaml"], env)
    assert "phase: keepalive-off" in listing.stdout
    missing = cli(["edge", "status", "edge-404"], env)
    assert missing.returncode == 7
    assert "edge 'edge-404' has reported no status" in missing.stderr


def test_drain_and_undrain_reach_the_edge(mesh: Mesh, edge_1: Identity) -> None:
    env = mesh.cp.cli_env()

    def drain_of(docs: dict[str, dict[str, Any]]) -> Any:
        return docs.get("Edge/edge-1", {}).get("spec", {}).get("drain")

    async def scenario() -> None:
        async with edge_stream(mesh.zone_cp("paris"), edge_1) as stream:
            await stream.until(lambda docs: "Edge/edge-1" in docs)
            assert drain_of(stream.documents) is None
            done = await asyncio.to_thread(
                cli,
                ["edge", "drain", "edge-1", "--reason", "kernel upgrade", "--signal", "as-path-prepend"],
                env,
            )
            assert done.returncode == 0, done.stderr
            assert done.stdout.startswith("edge/edge-1 drain requested at ")
            assert done.stdout.rstrip().endswith("(signals: as-path-prepend; reason: kernel upgrade)")
            drain = mesh.edge_doc("edge-1")["spec"]["drain"]
            assert drain["reason"] == "kernel upgrade"
            assert drain["signals"] == ["as-path-prepend"]
            assert (await stream.until(drain_of)) == drain  # at the edge, over its stream

            again = await asyncio.to_thread(
                cli,
                ["edge", "drain", "edge-1", "--signal", "graceful-shutdown", "--signal", "as-path-prepend"],
                env,
            )
            assert again.returncode == 0, again.stderr
            assert again.stdout.startswith(f"edge/edge-1 already draining since {drain['requestedAt']}; now ")
            updated = mesh.edge_doc("edge-1")["spec"]["drain"]
            assert updated == {**drain, "signals": ["graceful-shutdown", "as-path-prepend"]}

            undone = await asyncio.to_thread(cli, ["edge", "undrain", "edge-1"], env)
            assert undone.returncode == 0, undone.stderr
            assert (
                undone.stdout.strip() == f"edge/edge-1 drain cancelled (requested at {drain['requestedAt']})"
            )
            assert "drain" not in mesh.edge_doc("edge-1")["spec"]
            await stream.until(lambda docs: "Edge/edge-1" in docs and drain_of(docs) is None)

    asyncio.run(scenario())
    twice = cli(["edge", "undrain", "edge-1"], env)
    assert (twice.returncode, twice.stdout.strip()) == (0, "edge/edge-1 not draining")
    for command in (["edge", "drain", "ghost"], ["edge", "undrain", "ghost"]):
        missing = cli(command, env)
        assert missing.returncode == 7
        assert "no Edge named 'ghost' at the global CP" in missing.stderr


def test_a_drain_is_written_again_when_another_writer_came_first(mesh: Mesh) -> None:
    client = Client(Settings(mesh.cp.url, mesh.cp.token(), None))
    seen: list[int] = []

    def change(spec: dict[str, Any]) -> tuple[bool, str]:
        seen.append(spec["bgp"].get("med", 0))
        if len(seen) == 1:  # someone else writes between our read and our write
            mesh.admin.apply(doc("Edge", "edge-9", {"zone": "frankfurt", "bgp": {**BGP, "med": 50}}))
        return drain_spec(spec, "rack move", (), "2026-01-31T12:00:00Z")

    message = update_edge(client, "edge-9", change)
    assert (
        message
        == "edge/edge-9 drain requested at 2026-01-31T12:00:00Z (signals: graceful-shutdown; reason: rack move)"
    )
    assert seen == [0, 50]  # read again, changed again: the other write is kept
    spec = mesh.edge_doc("edge-9")["spec"]
    assert spec["bgp"]["med"] == 50
    assert spec["drain"]["reason"] == "rack move"


def test_an_invalid_edge_is_refused_at_apply_with_every_path(mesh: Mesh, tmp_path: Path) -> None:
    bad = tmp_path / "edge.yaml"
    bad.write_text(
        "apiVersion: meshgate/v1alpha1\nkind: Edge\nmetadata: {name: edge-bad}\nspec:\n  zone: paris\n"
        "  bgp:\n    localASN: 4294967296\n    routerID: 2001:db8::1\n"
        "    neighbors:\n    - {address: 10.0.0.300, peerASN: x, localAddress: nowhere}\n"
        "---\napiVersion: meshgate/v1alpha1\nkind: Edge\nmetadata: {name: edge-zero}\nspec:\n  zone: paris\n"
        "  bgp: {localASN: 0, routerID: 0.0.0.0, neighbors: [{address: '2001:db8::1', peerASN: 1}]}\n"
    )
    done = cli(["apply", "-f", str(bad)], mesh.cp.cli_env())
    assert done.returncode == 3, done.stderr
    lines = done.stderr.splitlines()
    assert lines[0].startswith("error: 7 violation(s); nothing was written (HTTP 400 Invalid)")
    first, second = f"  {bad} document 0 (Edge/edge-bad): ", f"  {bad} document 1 (Edge/edge-zero): "
    assert set(lines[1:]) == {
        first + "spec.bgp.localASN: must be at most 4294967295",
        first + "spec.bgp.routerID: must be an IPv4 address (dotted quad)",
        first + "spec.bgp.neighbors[0].address: must be an IPv4 or IPv6 address",
        first + "spec.bgp.neighbors[0].peerASN: must be an integer",
        first + "spec.bgp.neighbors[0].localAddress: must be an IPv4 or IPv6 address",
        second + "spec.bgp.localASN: must be at least 1",
        second + "spec.bgp.routerID: must not be 0.0.0.0 (a BGP identifier is non-zero)",
    }
    assert not {"edge-bad", "edge-zero"} & mesh.admin.names("edges")
