"""Static stability with real processes: the global CP killed and restarted (on a real etcd),
zones restarted while it is away, and an update from a newer global CP that zones refuse."""

from __future__ import annotations

import json
import sys
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support.etcd import EtcdServer
from tests.support.factories import doc
from tests.support.processes import Admin, GlobalCPProcess, ZoneCPProcess, cli, http_json, wait_for

pytestmark = pytest.mark.slow


def service(name: str) -> dict[str, Any]:
    return doc("Service", name, {"ports": [{"name": "http", "port": 8080, "protocol": "http"}]})


def synced_state(zone: ZoneCPProcess) -> dict[str, set[str]]:
    return {plural: zone.names(plural) for plural in ("services", "zones", "meshes", "globalservices")}


@pytest.mark.etcd
def test_zones_serve_through_a_global_outage_and_resync_after(
    etcd_server: EtcdServer, tmp_path: Path
) -> None:
    store = f"etcd://{','.join(etcd_server.endpoints)}/mg-{uuid.uuid4().hex[:8]}"
    cp = GlobalCPProcess(tmp_path / "global", store=store).start()
    admin = Admin(cp)
    admin.apply(doc("Zone", "a", {"region": "A"}), doc("Zone", "b", {"region": "B"}), service("before"))
    a = ZoneCPProcess(tmp_path / "a", "a", cp.zone_url, admin.token("zone", "a")).start()
    b = ZoneCPProcess(tmp_path / "b", "b", cp.zone_url, admin.token("zone", "b")).start()
    try:
        for zone in (a, b):
            wait_for(lambda z=zone: "before" in z.names("services"), 5, f"{zone.zone} synced")
        # An instance in zone b, learned by zone a as a cross-zone endpoint (fresh while connected).
        body = doc("Dataplane", "b.web-1", {"zone": "b", "role": "local", "address": "10.0.0.9", "port": 10001,
                   "workloads": [{"service": "before", "address": "127.0.0.1", "port": 8080, "health": "healthy"}]})  # fmt: skip
        request = urllib.request.Request(
            f"{b.url}/api/v1/dataplanes", data=json.dumps(body).encode(), method="POST",
            headers={"Authorization": f"Bearer {admin.token('proxy', 'b')}"},
        )  # fmt: skip
        assert http_json(request)[0] == 201
        fresh = wait_for(lambda: a.get_or_none("/api/v1/crosszoneendpoints/before"), 10, "the endpoint at a")
        assert fresh["status"]["sync"] == {"stale": False}
        admin.apply(service("just-before"))
        for zone in (a, b):
            wait_for(
                lambda z=zone: "just-before" in z.names("services"), 5, f"{zone.zone} has the last change"
            )
        expected = synced_state(a)

        late_token = admin.token("proxy", "b", reusable=True)  # made before the outage
        cp.kill()  # SIGKILL
        for zone in (a, b):
            wait_for(lambda z=zone: not z.sync()["globalToZone"]["connected"], 15, "the outage noticed")
            assert synced_state(zone) == expected  # still serving the last good state
        # Proxies still register: zone b verifies their tokens offline, with the synced key.
        late = doc(
            "Dataplane", "b.web-2", {"zone": "b", "role": "local", "address": "10.0.0.10", "port": 10001}
        )
        request = urllib.request.Request(
            f"{b.url}/api/v1/dataplanes", data=json.dumps(late).encode(), method="POST",
            headers={"Authorization": f"Bearer {late_token}"},
        )  # fmt: skip
        assert http_json(request)[0] == 201
        stale = a.get("/api/v1/crosszoneendpoints/before")
        assert stale["spec"]["zones"] == fresh["spec"]["zones"]  # still there, but marked
        assert stale["status"]["sync"]["stale"] is True
        assert stale["status"]["sync"]["ageSeconds"] >= 0
        a.stop()
        a.token = None  # no token needed any more: it comes back from its data dir alone
        a.start()
        assert synced_state(a) == expected
        assert a.sync()["globalToZone"]["connected"] is False
        after_restart = a.get("/api/v1/crosszoneendpoints/before")["status"]["sync"]
        assert after_restart["stale"] is True  # learned before the outage: it says so, with its age
        assert after_restart["learnedAt"]

        cp.start()  # same ports, same etcd
        for zone in (a, b):
            wait_for(lambda z=zone: z.sync()["globalToZone"]["connected"], 30, f"{zone.zone} back in sync")
        admin.apply(service("after"))
        for zone in (a, b):
            wait_for(lambda z=zone: "after" in z.names("services"), 5, f"{zone.zone} takes new changes")
            state = synced_state(zone)
            assert state["services"] == {"before", "just-before", "after"}  # nothing lost or doubled
            assert state["services"] == admin.names("services")
            assert state["zones"] == admin.names("zones")
        # What zone b registered during the outage reached the global CP once it came back.
        wait_for(
            lambda: "b.web-2" in admin.names("dataplanes"), 10, "the outage's registration at the global CP"
        )
    finally:
        for process in (a, b):
            process.kill()
        cp.kill()


def test_an_update_a_zone_cannot_apply_is_nacked_and_shown_at_the_global_cp(tmp_path: Path) -> None:
    newer = [sys.executable, "-m", "tests.support.newer_global"]
    cp = GlobalCPProcess(tmp_path / "global", command=newer).start()
    admin = Admin(cp)
    admin.apply(doc("Zone", "old", {"region": "Old"}), service("existing"))
    zone = ZoneCPProcess(tmp_path / "old", "old", cp.zone_url, admin.token("zone", "old")).start()
    try:
        wait_for(lambda: "existing" in zone.names("services"), 5, "zone synced")
        before = synced_state(zone)
        admin.apply(doc("RateLimitPolicy", "gentle", {"requestsPerSecond": 50}))

        def nack_at_global() -> str | None:
            done = cli(["get", "zone", "old", "-o", "json"], cp.cli_env())
            sync = (__import__("json").loads(done.stdout).get("status") or {}).get("sync") or {}
            return (sync.get("lastNack") or {}).get("error")

        error = wait_for(nack_at_global, 10, "the NACK at the global CP")
        assert error == (
            "update refused, nothing applied: RateLimitPolicy/gentle: unknown kind 'RateLimitPolicy' "
            "(is the global CP newer than this zone CP?)"
        )
        table = cli(["get", "zones"], cp.cli_env()).stdout
        assert "update refused, nothing applied: RateLimitPolicy/gentle" in table
        assert zone.sync()["lastNack"] == error
        assert synced_state(zone) == before  # the last good state stays

        # Once the operator removes what the zone cannot take, updates flow again.
        admin.delete("ratelimitpolicies", "gentle")
        admin.apply(service("later"))
        wait_for(lambda: "later" in zone.names("services"), 30, "updates flowing again")
    finally:
        zone.kill()
        cp.kill()
