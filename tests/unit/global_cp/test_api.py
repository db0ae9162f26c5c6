"""The global CP API, served for real on a loopback port, driven over HTTP."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import jsonschema
from openapi_spec_validator import validate

from global_cp.server import GlobalCP
from meshgate.clock import SystemClock
from meshgate.demo.resources import documents, public_certificate
from tests.support.api import Api
from tests.support.factories import doc

ZONE_EU = doc("Zone", "eu", {"region": "Europe"}, env="prod")
SERVICE_WEB = doc("Service", "web", {"ports": [{"name": "http", "port": 8080, "protocol": "http"}]})
GS_WEB = doc(
    "GlobalService",
    "web",
    {
        "service": "web",
        "hostnames": ["www.example.com"],
        "vips": ["203.0.113.10"],
        "ports": [{"name": "http", "port": 80, "protocol": "http", "targetPort": "http"}],
        "zones": [{"zone": "eu"}],
    },
)


async def test_health_ready_and_metrics_need_no_token(api: Api) -> None:
    for path in ("/healthz", "/readyz", "/openapi.json"):
        assert (await api.call("GET", path, token="")).status == 200
    await api.get("/api/v1/zones")
    metrics = await api.call("GET", "/metrics", token="")
    assert 'meshgate_api_requests_total{code="200",method="GET",route="/api/v1/{plural}"}' in metrics.body


async def test_every_api_route_needs_the_admin_token(api: Api) -> None:
    missing = await api.call("GET", "/api/v1/zones", token="")
    assert missing.status == 401
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    wrong = await api.call("POST", "/api/v1/apply", body={"items": [ZONE_EU]}, token="mgat_forged")
    assert wrong.status == 401
    assert (await api.get("/api/v1/zones")).body["items"] == []


async def test_apply_then_read_back(api: Api) -> None:
    reply = await api.apply(ZONE_EU, SERVICE_WEB, GS_WEB)
    assert reply.status == 200
    assert [(r["kind"], r["name"], r["outcome"]) for r in reply.body["results"]] == [
        ("Zone", "eu", "created"),
        ("Service", "web", "created"),
        ("GlobalService", "web", "created"),
    ]
    listing = await api.get("/api/v1/globalservices")
    assert [d["metadata"]["name"] for d in listing.body["items"]] == ["web"]
    item = listing.body["items"][0]
    assert item["spec"]["vips"] == ["203.0.113.10"]
    assert item["metadata"]["generation"] == 1
    again = await api.apply(ZONE_EU, SERVICE_WEB, GS_WEB)
    assert {r["outcome"] for r in again.body["results"]} == {"unchanged"}
    assert again.body["resourceVersion"] == reply.body["resourceVersion"]


async def test_yaml_bodies_are_accepted(api: Api) -> None:
    text = "apiVersion: meshgate/v1alpha1\nkind: Zone\nmetadata: {name: us}\nspec: {region: US}\n"
    reply = await api.call("POST", "/api/v1/apply", text=text)
    assert reply.status == 200
    assert (await api.get("/api/v1/zones/us")).body["spec"]["region"] == "US"


async def test_an_invalid_apply_lists_every_violation_and_writes_nothing(api: Api) -> None:
    await api.apply(ZONE_EU)
    before = (await api.get("/api/v1/zones")).body["metadata"]["resourceVersion"]
    bad_gs = json.loads(json.dumps(GS_WEB))
    bad_gs["spec"]["ports"][0]["protocol"] = "udp"
    bad_gs["spec"]["vips"] = ["not-an-ip"]
    reply = await api.apply(doc("Zone", "us", {}), SERVICE_WEB, bad_gs, {"kind": "Nope"})
    assert reply.status == 400
    assert reply.body["error"]["reason"] == "Invalid"
    paths = {(v["document"], v["path"]) for v in reply.body["error"]["violations"]}
    assert paths == {
        (2, "spec.vips[0]"),
        (2, "spec.ports[0].protocol"),
        (3, "apiVersion"),
        (3, "kind"),
        (3, "metadata"),
        (3, "spec"),
    }
    after = (await api.get("/api/v1/zones")).body
    assert after["metadata"]["resourceVersion"] == before
    assert [z["metadata"]["name"] for z in after["items"]] == ["eu"]
    # Valid documents that break references are refused as a whole too.
    dangling = await api.apply(doc("Zone", "us", {}), GS_WEB)
    assert dangling.status == 400
    assert dangling.violations == ["spec.service: Service 'web' does not exist"]
    assert (await api.get("/api/v1/zones/us")).status == 404


async def test_malformed_yaml_is_a_400_with_position(api: Api) -> None:
    reply = await api.call("POST", "/api/v1/apply", text="kind: Zone\nmetadata: {name: [\n")
    assert reply.status == 400
    assert reply.violations[0].startswith("invalid YAML at line 3")


async def test_body_over_the_limit_is_413(api: Api) -> None:
    huge = doc("Zone", "eu", {"region": "x" * 300_000})
    reply = await api.apply(huge)
    assert reply.status == 413
    assert (await api.get("/api/v1/zones")).body["items"] == []


async def test_zone_reported_kinds_are_not_written_by_operators(api: Api) -> None:
    await api.apply(ZONE_EU)
    dataplane = doc(
        "Dataplane", "eu.web-1", {"zone": "eu", "role": "local", "address": "10.0.0.1", "port": 1}
    )
    reply = await api.apply(dataplane)
    assert reply.status == 403
    assert "written only by the zone control plane" in reply.body["error"]["message"]


async def test_concurrent_updates_from_one_resource_version(api: Api) -> None:
    created = (await api.apply(ZONE_EU)).body["results"][0]
    version = created["resourceVersion"]

    def update(region: str) -> dict[str, Any]:
        changed = json.loads(json.dumps(ZONE_EU))
        changed["spec"]["region"] = region
        changed["metadata"]["resourceVersion"] = version
        return changed

    replies = await asyncio.gather(
        api.call("PUT", "/api/v1/zones/eu", body=update("one")),
        api.call("PUT", "/api/v1/zones/eu", body=update("two")),
    )
    assert sorted(r.status for r in replies) == [200, 409]
    winner = next(r for r in replies if r.status == 200)
    loser = next(r for r in replies if r.status == 409)
    assert "changed since it was read" in loser.body["error"]["message"]
    assert (await api.get("/api/v1/zones/eu")).body["spec"]["region"] == winner.body["spec"]["region"]


async def test_create_existing_and_missing_reads(api: Api) -> None:
    assert (await api.call("POST", "/api/v1/zones", body=ZONE_EU)).status == 201
    again = await api.call("POST", "/api/v1/zones", body=ZONE_EU)
    assert (again.status, again.body["error"]["reason"]) == (409, "AlreadyExists")
    assert (await api.get("/api/v1/zones/nowhere")).status == 404
    assert (await api.get("/api/v1/widgets")).status == 404
    assert (await api.get("/api/v1/admincredentials")).status == 404
    mismatch = await api.call("PUT", "/api/v1/zones/other", body=ZONE_EU)
    assert mismatch.status == 400


async def test_delete_refused_while_referenced_then_allowed(api: Api) -> None:
    await api.apply(ZONE_EU, SERVICE_WEB, GS_WEB)
    refused = await api.call("DELETE", "/api/v1/zones/eu")
    assert refused.status == 400
    assert refused.violations == ["still referenced by GlobalService/web (spec.zones[0].zone)"]
    assert (await api.call("DELETE", "/api/v1/globalservices/web")).status == 200
    deleted = await api.call("DELETE", "/api/v1/zones/eu")
    assert [(r["kind"], r["name"], r["outcome"]) for r in deleted.body["results"]] == [
        ("Zone", "eu", "deleted")
    ]
    assert (await api.call("DELETE", "/api/v1/zones/eu")).status == 404


async def test_dry_run_writes_nothing(api: Api) -> None:
    reply = await api.apply(ZONE_EU, dry_run=True)
    assert reply.body["dryRun"] is True
    assert reply.body["results"][0]["outcome"] == "created"
    assert (await api.get("/api/v1/zones")).body["items"] == []


async def test_label_selectors(api: Api) -> None:
    await api.apply(ZONE_EU, doc("Zone", "us", {}, env="dev"))
    prod = await api.get("/api/v1/zones?labelSelector=env%3Dprod")
    assert [z["metadata"]["name"] for z in prod.body["items"]] == ["eu"]
    bad = await api.get("/api/v1/zones?labelSelector=env%20in%20()")
    assert bad.status == 400


async def test_secret_data_is_never_read_back(api: Api) -> None:
    cert, key = public_certificate(SystemClock().now())
    secret = doc(
        "Secret", "web-tls", {"type": "tls", "data": {"tls.crt": cert, "tls.key": key}, "zones": ["*"]}
    )
    events = asyncio.create_task(_watch_lines(api, "?kinds=Secret", 1))
    await asyncio.sleep(0.2)
    assert (await api.apply(secret)).status == 200
    for body in [
        (await api.get("/api/v1/secrets/web-tls")).body,
        (await api.get("/api/v1/secrets")).body["items"][0],
        (await events)[0]["object"],
    ]:
        assert "data" not in body["spec"]
        assert set(body["status"]["redacted"]["data"]) == {"tls.crt", "tls.key"}
        assert "PRIVATE KEY" not in json.dumps(body)


async def _watch_lines(api: Api, query: str, n: int) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    headers = {"Authorization": f"Bearer {api.token}"}
    async with api.session.get(f"{api.url}/api/v1/watch{query}", headers=headers) as response:
        assert response.status == 200
        async for raw in response.content:
            line = json.loads(raw)
            if line["type"] != "HEARTBEAT":
                lines.append(line)
            if len(lines) == n:
                return lines
    return lines


async def test_watch_in_order_and_resume(api: Api) -> None:
    start = (await api.get("/api/v1/zones")).body["metadata"]["resourceVersion"]
    await api.apply(ZONE_EU)
    await api.apply(SERVICE_WEB, GS_WEB)
    changed = json.loads(json.dumps(ZONE_EU))
    changed["spec"]["region"] = "EU"
    await api.apply(changed)
    await api.call("DELETE", "/api/v1/globalservices/web")
    events = await asyncio.wait_for(_watch_lines(api, f"?fromRevision={start}", 5), 10)
    assert [(e["type"], e["object"]["kind"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "Zone", "eu"),
        ("ADDED", "Service", "web"),
        ("ADDED", "GlobalService", "web"),
        ("MODIFIED", "Zone", "eu"),
        ("DELETED", "GlobalService", "web"),
    ]
    # Reconnect after the third event (its revision also covers the second: one apply):
    # the rest arrives, nothing twice.
    assert events[1]["revision"] == events[2]["revision"]
    rest = await asyncio.wait_for(_watch_lines(api, f"?fromRevision={events[2]['revision']}", 2), 10)
    assert [(e["type"], e["revision"]) for e in events[3:]] == [(e["type"], e["revision"]) for e in rest]
    # System kinds never show up in watches.
    assert all(e["object"]["kind"] not in ("WriteFence", "MeshCA") for e in events)
    filtered = await asyncio.wait_for(_watch_lines(api, f"?fromRevision={start}&kinds=Zone", 2), 10)
    assert [e["type"] for e in filtered] == ["ADDED", "MODIFIED"]
    bad = await api.get("/api/v1/watch?kinds=AdminCredential")
    assert bad.status == 400


async def test_join_tokens_verify_offline(api: Api, cp: GlobalCP) -> None:
    from meshgate.pki import join_tokens
    from meshgate.resources.kinds.system import SigningKeySpec

    reply = await api.call("POST", "/api/v1/tokens", body={"role": "zone", "zone": "eu", "ttl": "1h"})
    assert reply.status == 201
    ca = (await api.get("/api/v1/meshes/default/ca")).body
    assert reply.body["caFingerprint"] == ca["fingerprint"]
    stored = (await cp.service._store.get("SigningKey", "join-token")).spec_as(SigningKeySpec)
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    public = load_pem_public_key(stored.public_key.encode())
    claims = join_tokens.verify(
        reply.body["token"],
        {stored.key_id: public},
        now=SystemClock().now(),  # type: ignore[dict-item]
        role="zone",
        zone="eu",
    )
    assert claims.ca_fingerprint == ca["fingerprint"]
    assert claims.reusable is False
    bad = await api.call("POST", "/api/v1/tokens", body={"role": "king", "zone": "EU", "ttl": "forever"})
    assert bad.status == 400
    assert sorted(bad.violations) == [
        "role: must be one of zone, edge, ingress, proxy",
        "ttl: must be a duration such as 90s, 15m, 24h or 1h30m",
        "zone: must be a DNS label: at most 63 lowercase letters, digits or '-', "
        "starting and ending with a letter or digit",
    ]


async def test_each_mesh_gets_its_own_root_ca(api: Api) -> None:
    default = (await api.get("/api/v1/meshes/default/ca")).body
    assert default["trustDomain"] == "meshgate.local"
    assert default["certificate"].startswith("-----BEGIN CERTIFICATE-----")
    assert "PRIVATE" not in json.dumps(default)
    await api.apply(doc("Mesh", "payments", {"trustDomain": "payments.example"}))
    for _ in range(100):
        reply = await api.get("/api/v1/meshes/payments/ca")
        if reply.status == 200:
            break
        await asyncio.sleep(0.05)
    assert reply.status == 200
    assert reply.body["trustDomain"] == "payments.example"
    assert reply.body["fingerprint"] != default["fingerprint"]


async def test_openapi_document_is_valid_and_matches_validation(api: Api) -> None:
    spec = (await api.call("GET", "/openapi.json", token="")).body
    validate(spec)
    schemas = spec["components"]["schemas"]
    resolver_root = {"components": {"schemas": schemas}}
    for document in documents(SystemClock().now()):
        schema = {**schemas[document["kind"]], "components": resolver_root["components"]}
        jsonschema.validate(document, schema)


async def test_store_file_removed_gives_503_not_a_hang(api: Api, cp: GlobalCP) -> None:
    await api.apply(ZONE_EU)
    db = cp.config.data_dir / "store.db"
    os.rename(db, db.with_suffix(".moved"))
    reply = await asyncio.wait_for(api.apply(doc("Zone", "us", {})), 5)
    assert reply.status == 503
    assert reply.headers["Retry-After"] == "5"
    assert "removed or replaced" in reply.body["error"]["message"]
    assert (await api.call("GET", "/readyz", token="")).status == 503


async def test_a_locked_store_gives_503_within_the_busy_timeout(api: Api, cp: GlobalCP) -> None:
    import sqlite3
    import time

    await api.apply(ZONE_EU)
    other = sqlite3.connect(cp.config.data_dir / "store.db", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # another process holding the file
    try:
        started = time.monotonic()
        reply = await asyncio.wait_for(api.apply(doc("Zone", "us", {})), 10)
        assert reply.status == 503
        assert "Retry-After" in reply.headers
        assert "database is locked" in reply.body["error"]["message"]
        assert time.monotonic() - started < 8
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert (await api.apply(doc("Zone", "us", {}))).status == 200


async def test_watch_from_compacted_history_is_410(tmp_path: Any) -> None:
    from global_cp.config import GlobalCPConfig

    server = GlobalCP(
        GlobalCPConfig(
            data_dir=tmp_path / "cp",
            store_url=f"sqlite:{tmp_path / 'store.db'}?history=3",
            listen="127.0.0.1:0",
        )
    )
    await server.start()
    await server.wait_ready()
    client = Api(server.url, server.config.admin_token.read_text().strip())
    try:
        for i in range(6):
            assert (await client.apply(doc("Zone", f"z{i}", {}))).status == 200
        gone = await client.get("/api/v1/watch?fromRevision=1")
        assert gone.status == 410
        assert "compacted" in gone.body["error"]["message"]
    finally:
        await client.close()
        await server.stop()
