"""Global and zone CPs as separate processes: propagation, reports, partitions, visibility,
enrollment refusals and impersonation. One global CP and two zones serve the whole module."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from meshgate.sync.versions import content_version
from tests.support.factories import doc
from tests.support.processes import Admin, GlobalCPProcess, ZoneCPProcess, cli, http_json, wait_for
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.slow


@dataclass
class Mesh:
    cp: GlobalCPProcess
    admin: Admin
    eu: ZoneCPProcess  # reaches the global CP through `proxy`
    us: ZoneCPProcess
    proxy: TcpProxy
    root: Path


def service(name: str, port: int = 8080) -> dict[str, Any]:
    return doc("Service", name, {"ports": [{"name": "http", "port": port, "protocol": "http"}]})


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    root = tmp_path_factory.mktemp("zone-sync")
    cp = GlobalCPProcess(root / "global").start()
    admin = Admin(cp)
    admin.apply(
        doc("Zone", "eu", {"region": "Europe"}),
        doc("Zone", "us", {"region": "America"}),
        doc("Zone", "spare", {"region": "Spare"}),
        doc("Zone", "off", {"region": "Nowhere", "enabled": False}),
    )
    proxy = TcpProxy("127.0.0.1", cp.zone_port).start()
    eu = ZoneCPProcess(
        root / "eu", "eu", f"https://127.0.0.1:{proxy.port}", admin.token("zone", "eu")
    ).start()
    us = ZoneCPProcess(root / "us", "us", cp.zone_url, admin.token("zone", "us")).start()
    for zone in (eu, us):
        wait_for(lambda z=zone: z.sync()["globalToZone"]["connected"], 20, f"{zone.zone} connected")
    try:
        yield Mesh(cp, admin, eu, us, proxy, root)
    finally:
        for zone in (eu, us):
            zone.kill()
        proxy.stop()
        cp.kill()


def test_a_change_reaches_both_zones_within_a_second_and_so_does_its_deletion(mesh: Mesh) -> None:
    started = time.monotonic()
    mesh.admin.apply(service("checkout"))
    for zone in (mesh.eu, mesh.us):
        wait_for(lambda z=zone: "checkout" in z.names("services"), 1.0, f"checkout at {zone.zone}", 0.01)
    applied = time.monotonic() - started
    started = time.monotonic()
    mesh.admin.delete("services", "checkout")
    for zone in (mesh.eu, mesh.us):
        wait_for(lambda z=zone: "checkout" not in z.names("services"), 1.0, f"deletion at {zone.zone}", 0.01)
    print(
        f"\napplied at both zones in {applied * 1000:.0f} ms, deleted in {(time.monotonic() - started) * 1000:.0f} ms"
    )


def test_each_zone_receives_what_is_meant_for_it(mesh: Mesh) -> None:
    edge = doc("Edge", "edge-eu-1", {"zone": "eu", "bgp": {"localASN": 65001, "routerID": "10.0.0.1",
               "neighbors": [{"address": "10.0.0.254", "peerASN": 65000}]}})  # fmt: skip
    secret = doc("Secret", "us-only", {"type": "opaque", "data": {"k": "v"}, "zones": ["us"]})
    mesh.admin.apply(edge, secret)
    wait_for(lambda: "edge-eu-1" in mesh.eu.names("edges"), 5, "the edge at its zone")
    wait_for(lambda: "us-only" in mesh.us.names("secrets"), 5, "the secret at its zone")
    assert "edge-eu-1" not in mesh.us.names("edges")
    assert "us-only" not in mesh.eu.names("secrets")
    # Key material that syncs to zones (CA certificate, token-verification key) is not served
    # by the zone API either.
    with pytest.raises(urllib.error.HTTPError) as hidden:
        mesh.us.get("/api/v1/signingkeys")
    assert hidden.value.code == 404
    hidden.value.close()


def register(zone: ZoneCPProcess, token: str, body: dict[str, Any]) -> tuple[int, Any]:
    plural = {"Dataplane": "dataplanes", "ZoneIngress": "zoneingresses"}[body["kind"]]
    request = urllib.request.Request(
        f"{zone.url}/api/v1/{plural}", data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )  # fmt: skip
    return http_json(request)


def dataplane(zone: str, name: str, service: str, health: str = "healthy") -> dict[str, Any]:
    return doc("Dataplane", f"{zone}.{name}", {
        "zone": zone, "role": "local", "address": "10.1.0.5", "port": 10001,
        "workloads": [{"service": service, "address": "127.0.0.1", "port": 8080, "health": health}],
    })  # fmt: skip


def test_zone_reports_reach_the_global_cp_and_every_zone_learns_the_endpoints(mesh: Mesh) -> None:
    proxy_token = mesh.admin.token("proxy", "eu", reusable=True)
    status, body = register(mesh.eu, proxy_token, dataplane("eu", "pay-1", "payments"))
    assert status == 201, body
    ingress = doc("ZoneIngress", "eu.ingress-1", {"zone": "eu", "address": "192.0.2.10", "port": 10001})
    assert register(mesh.eu, mesh.admin.token("ingress", "eu"), ingress)[0] == 201
    wait_for(lambda: "eu.pay-1" in mesh.admin.names("dataplanes"), 5, "the dataplane at the global CP")

    def endpoints_at_us() -> Any:
        items = mesh.us.get("/api/v1/crosszoneendpoints")["items"]
        return next(
            (i for i in items if i["metadata"]["name"] == "payments" and i["spec"]["zones"][0]["ingresses"]),
            None,
        )

    table = wait_for(endpoints_at_us, 5, "cross-zone endpoints at the other zone")
    assert table["spec"]["zones"] == [
        {"zone": "eu", "healthy": 1, "ingresses": [{"address": "192.0.2.10", "port": 10001}]}
    ]
    assert table["status"]["sync"] == {"stale": False}

    # A zone CP takes reports only for its own zone, and only with a token for it.
    assert register(mesh.eu, proxy_token, dataplane("us", "pay-2", "payments"))[0] == 400
    assert register(mesh.eu, mesh.admin.token("proxy", "us"), dataplane("eu", "pay-3", "payments"))[0] == 401
    assert register(mesh.eu, "mgjt1.forged.token", dataplane("eu", "pay-4", "payments"))[0] == 401
    edge_token = mesh.admin.token("edge", "eu")
    assert register(mesh.eu, edge_token, dataplane("eu", "pay-5", "payments"))[0] == 403


def test_a_cut_connection_resumes_and_resends_only_what_changed(mesh: Mesh) -> None:
    mesh.admin.apply(*(service(f"bulk-{i}") for i in range(40)))
    wait_for(lambda: len({f"bulk-{i}" for i in range(40)} - mesh.eu.names("services")) == 0, 5, "bulk at eu")
    before = mesh.admin.metric("meshgate_sync_resources_sent_total", stream="global-to-zone", zone="eu")
    mesh.proxy.cut()
    wait_for(lambda: not mesh.eu.sync()["globalToZone"]["connected"], 10, "eu to notice the cut")
    mesh.admin.apply(service("bulk-1", 9001), service("bulk-2", 9002))
    mesh.admin.delete("services", "bulk-3")
    assert "bulk-3" in mesh.eu.names("services")  # still the last good state, while cut off
    mesh.proxy.restore()
    wait_for(lambda: mesh.eu.sync()["globalToZone"]["connected"], 30, "eu to reconnect")
    wait_for(lambda: "bulk-3" not in mesh.eu.names("services"), 5, "the deletion at eu")
    port = mesh.eu.get("/api/v1/services/bulk-2")["spec"]["ports"][0]["port"]
    assert port == 9002
    resent = (
        mesh.admin.metric("meshgate_sync_resources_sent_total", stream="global-to-zone", zone="eu") - before
    )
    assert resent == 3, f"after a reconnect {resent} resources were sent, expected the 3 that changed"


def test_get_zones_shows_connection_version_lag_and_inventory(mesh: Mesh) -> None:
    def rows() -> dict[str, list[str]]:
        done = cli(["get", "zones"], mesh.cp.cli_env())
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert lines[0].split()[:7] == [
            "NAME",
            "REGION",
            "ENABLED",
            "CONNECTED",
            "APPLIED",
            "LAG",
            "DATAPLANES",
        ]
        return {line.split()[0]: line.split() for line in lines[1:]}

    table = wait_for(
        lambda: (t := rows()) and t["eu"][3] == "yes" and t["us"][3] == "yes" and t, 10, "both connected"
    )
    assert table["off"][3] == "never"
    zones = mesh.admin.call("GET", "/api/v1/zones/eu")[1]
    sync = zones["status"]["sync"]
    assert sync["appliedVersion"] > 0
    assert sync["lastNack"] is None
    assert zones["status"]["zoneCP"]["version"]


def craft_token(token: str, **changes: Any) -> str:
    prefix, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    encoded = (
        base64.urlsafe_b64encode(json.dumps(claims, separators=(",", ":")).encode()).rstrip(b"=").decode()
    )
    return f"{prefix}.{encoded}.{signature}"


def failed_enrollment(mesh: Mesh, name: str, zone: str, token: str) -> str:
    zcp = ZoneCPProcess(mesh.root / name, zone, mesh.cp.zone_url, token).start(wait_joined=False)
    try:
        assert zcp.wait_exit(30) == 1
    finally:
        zcp.kill()
    return zcp.tail()


def test_enrollment_with_a_used_expired_forged_or_foreign_token_fails(mesh: Mesh) -> None:
    token = mesh.admin.token("zone", "spare")
    first = ZoneCPProcess(mesh.root / "spare-1", "spare", mesh.cp.zone_url, token).start()
    first.stop()
    assert "already used" in failed_enrollment(mesh, "spare-2", "spare", token)
    assert mesh.admin.metric("meshgate_zone_refusals_total", reason="token-used") == 1

    short = mesh.admin.token("zone", "spare", ttl="1s")
    expiry = time.time() + 1.0
    wait_for(lambda: time.time() > expiry, 3, "the token to expire")
    assert "expired" in failed_enrollment(mesh, "spare-3", "spare", short)

    valid = mesh.admin.token("zone", "spare")
    forged = craft_token(valid, reusable=True)  # claims changed, signature kept
    assert "bad-signature" in failed_enrollment(mesh, "spare-4", "spare", forged)
    elsewhere = craft_token(valid, ca_fingerprint="sha256:" + "0" * 64)  # another installation's CA
    assert "refusing to trust it" in failed_enrollment(mesh, "spare-5", "spare", elsewhere)
    assert "not defined at the global CP" in failed_enrollment(
        mesh, "ghost", "ghost", mesh.admin.token("zone", "ghost")
    )
    assert "is disabled" in failed_enrollment(mesh, "off", "off", mesh.admin.token("zone", "off"))
    assert mesh.admin.metric("meshgate_zone_refusals_total", reason="token-expired") == 1
    assert mesh.admin.metric("meshgate_zone_refusals_total", reason="token-bad-signature") == 1
    assert mesh.admin.metric("meshgate_zone_refusals_total", reason="unknown-zone") == 1
    assert mesh.admin.metric("meshgate_zone_refusals_total", reason="disabled-zone") == 1


def test_a_zone_certificate_cannot_speak_for_another_zone(mesh: Mesh) -> None:
    from tests.support.zone_client import connect_as

    # eu holds its intermediate CA's key: it can mint a certificate naming us. Refused.
    status = connect_as(mesh.root / "eu", "eu", claim_zone="us", url=mesh.cp.zone_url)
    assert status == 403
    assert mesh.admin.metric("meshgate_zone_refusals_total", reason="bad-certificate") >= 1
    # Another installation's zone certificate (another root, another trust domain): the TLS
    # handshake itself refuses it.
    from tests.support.zone_client import connect_from_elsewhere

    refused = connect_from_elsewhere(mesh.cp.zone_url, "eu")
    assert refused.startswith(("TLS:", "HTTP 40")), refused
    # Its own name, from its own intermediate: accepted (the check is not simply "refuse all").
    assert connect_as(mesh.root / "eu", "eu", claim_zone="eu", url=mesh.cp.zone_url) == 101


def test_a_zone_breaking_the_protocol_is_disconnected_and_nothing_it_sent_is_applied(mesh: Mesh) -> None:
    from tests.support.zone_client import send_as

    foreign = dataplane("us", "sneaky", "payments")
    update = {"type": "update", "nonce": "n1", "version": 1, "final": True, "removals": [],
              "upserts": [{"key": "Dataplane/us.sneaky", "version": content_version(foreign), "doc": foreign}]}  # fmt: skip
    code, reason = send_as(mesh.root / "eu", "eu", mesh.cp.zone_url, json.dumps(update))
    assert (code, reason) == (
        1008,
        "Dataplane/us.sneaky belongs to zone 'us'; this connection speaks for 'eu'",
    )
    for garbage, expected in [
        ("{not json", "message is not JSON"),
        ('{"type": "gossip"}', "unknown message type 'gossip'"),
        ('{"type": "hello", "known": {}}', "a source does not send hello"),
    ]:
        code, reason = send_as(mesh.root / "eu", "eu", mesh.cp.zone_url, garbage)
        assert code == 1008
        assert reason.startswith(expected[:40]), reason
    oversized = "x" * (9 * 1024 * 1024)  # over the 8 MiB a sync message may be
    code, _reason = send_as(mesh.root / "eu", "eu", mesh.cp.zone_url, oversized)
    # Closed before it is parsed: 1009 (too big) if the close frame arrives before the reset of
    # a connection the server dropped mid-frame (1006).
    assert code in (1009, 1006)
    assert "us.sneaky" not in mesh.admin.names("dataplanes")
    assert mesh.admin.metric("meshgate_zone_refusals_total", reason="protocol") >= 4
    # eu's own CP reconnects by itself after its streams were replaced by these test connections.
    wait_for(lambda: mesh.eu.sync()["zoneToGlobal"]["connected"], 30, "eu to reconnect")
