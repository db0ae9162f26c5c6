"""The global CP on real etcd: the operator flow, a leader killed mid-stream, two replicas."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.support.etcd import EtcdCluster, EtcdServer
from tests.support.processes import GlobalCPProcess, cli, cli_json, http_json, wait_for

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
pytestmark = [pytest.mark.etcd, pytest.mark.slow]


def etcd_url(endpoints: list[str]) -> str:
    return f"etcd://{','.join(endpoints)}/mg-{uuid.uuid4().hex[:10]}"


def post(url: str, token: str, path: str, body: Any, timeout: float = 30) -> tuple[int, Any]:
    request = urllib.request.Request(
        url + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    return http_json(request, timeout)


def delete(url: str, token: str, path: str) -> int:
    request = urllib.request.Request(
        url + path, method="DELETE", headers={"Authorization": f"Bearer {token}"}
    )
    return http_json(request)[0]


def zone_doc(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "meshgate/v1alpha1", "kind": "Zone", "metadata": {"name": name}, "spec": spec}


def test_operator_flow_on_etcd_survives_restart(etcd_server: EtcdServer, tmp_path: Path) -> None:
    cp = GlobalCPProcess(tmp_path / "cp", store=etcd_url(etcd_server.endpoints)).start()
    try:
        env = cp.cli_env()
        done = cli(["apply", "-f", str(EXAMPLES)], env)
        assert done.returncode == 0, done.stderr
        before = cli_json(["get", "globalservices"], env)
        assert isinstance(before, dict)
        assert {d["metadata"]["name"] for d in before["items"]} == {"web", "bastion"}
        cp.kill()  # even a crash: etcd holds everything acknowledged
        cp.start()
        assert cli_json(["get", "globalservices"], cp.cli_env()) == before
    finally:
        cp.kill()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[EtcdCluster]:
    c = EtcdCluster(tmp_path / "etcd", size=3).start()
    try:
        yield c
    finally:
        c.stop()


def test_leader_killed_during_api_writes_loses_no_acknowledged_write(
    cluster: EtcdCluster, tmp_path: Path
) -> None:
    cp = GlobalCPProcess(tmp_path / "cp", store=etcd_url(cluster.endpoints)).start()
    acked: list[tuple[str, float]] = []
    refused = 0
    stop = threading.Event()

    def writer() -> None:
        nonlocal refused
        i = 0
        token = cp.token()
        while not stop.is_set():
            name = f"z-{i}"
            status, _ = post(cp.url, token, "/api/v1/apply", {"kind": "List", "items": [zone_doc(name)]})
            if status == 200:
                acked.append((name, time.monotonic()))
                i += 1
            else:
                assert status == 503, status  # unavailable, with Retry-After: the client retries
                refused += 1
                time.sleep(0.2)

    thread = threading.Thread(target=writer, daemon=True)
    try:
        thread.start()
        wait_for(lambda: len(acked) >= 30, 30, "30 writes before the kill")
        leader = cluster.leader()
        killed_at = time.monotonic()
        cluster.kill(leader)
        wait_for(
            lambda: acked and acked[-1][1] > killed_at + 0.5 and len(acked) >= 60,
            60,
            "writes to resume after the leader was killed",
        )
        stop.set()
        thread.join(30)
        before = [t for _, t in acked if t <= killed_at]
        after = [t for _, t in acked if t > killed_at]
        gap = after[0] - (before[-1] if before else killed_at)
        print(
            f"\nleader kill: {len(before)} writes before, {len(after)} after, "
            f"{refused} refused with 503, longest pause {gap:.2f}s"
        )
        assert gap < 20
        listing = cli_json(["get", "zones"], cp.cli_env())
        assert isinstance(listing, dict)
        stored = {d["metadata"]["name"] for d in listing["items"]}
        missing = {name for name, _ in acked} - stored
        assert not missing, f"acknowledged but lost: {sorted(missing)}"
    finally:
        stop.set()
        cp.kill()


def test_two_replicas_share_one_etcd(etcd_server: EtcdServer, tmp_path: Path) -> None:
    store = etcd_url(etcd_server.endpoints)
    kek = tmp_path / "kek"
    a = GlobalCPProcess(tmp_path / "a", store=store, extra=["--kek-file", str(kek)])
    a.start()
    b = GlobalCPProcess(tmp_path / "b", store=store, extra=["--kek-file", str(kek)]).start()
    try:
        # One bootstrap: the same CA seen through both, one admin credential (only A holds it).
        token = a.token()
        assert not b.token_file.exists()
        ca = [cli_json(["get", "mesh", "default"], r.cli_env() | {"MESHGATE_TOKEN": token}) for r in (a, b)]
        assert ca[0] == ca[1]
        fingerprints = set()
        for replica in (a, b):
            with urllib.request.urlopen(
                urllib.request.Request(
                    replica.url + "/api/v1/meshes/default/ca", headers={"Authorization": f"Bearer {token}"}
                )
            ) as response:
                fingerprints.add(json.loads(response.read())["fingerprint"])
        assert len(fingerprints) == 1

        # Validation races across replicas: deleting a zone while another replica adds an
        # edge in it. The fence lets at most one of the two commit, every time.
        for round_ in range(8):
            zone = f"race-{round_}"
            assert post(a.url, token, "/api/v1/apply", {"kind": "List", "items": [zone_doc(zone)]})[0] == 200
            edge = {
                "apiVersion": "meshgate/v1alpha1",
                "kind": "Edge",
                "metadata": {"name": f"e-{round_}"},
                "spec": {
                    "zone": zone,
                    "bgp": {
                        "localASN": 65001,
                        "routerID": "10.0.0.1",
                        "neighbors": [{"address": "10.0.0.2", "peerASN": 65000}],
                    },
                },
            }
            with ThreadPoolExecutor(2) as pool:
                deleting = pool.submit(delete, a.url, token, f"/api/v1/zones/{zone}")
                adding = pool.submit(post, b.url, token, "/api/v1/apply", {"kind": "List", "items": [edge]})
                results = {"delete": deleting.result(60), "edge": adding.result(60)[0]}
            assert sorted(results.values()) == [200, 400], results
            edges = cli_json(["get", "edges"], a.cli_env())
            zones = cli_json(["get", "zones"], a.cli_env())
            assert isinstance(edges, dict)
            assert isinstance(zones, dict)
            zone_names = {z["metadata"]["name"] for z in zones["items"]}
            assert all(e["spec"]["zone"] in zone_names for e in edges["items"]), "dangling edge"
    finally:
        a.kill()
        b.kill()


def test_etcd_down_gives_503_with_retry_after_not_a_hang(tmp_path: Path) -> None:
    etcd = EtcdServer(tmp_path / "etcd").start()
    cp = GlobalCPProcess(tmp_path / "cp", store=etcd_url(etcd.endpoints) + "?timeout=2").start()
    try:
        token = cp.token()
        assert post(cp.url, token, "/api/v1/apply", {"kind": "List", "items": [zone_doc("before")]})[0] == 200
        etcd.kill()
        started = time.monotonic()
        request = urllib.request.Request(
            cp.url + "/api/v1/apply",
            data=json.dumps({"kind": "List", "items": [zone_doc("during")]}).encode(),
            method="POST",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        elapsed = time.monotonic() - started
        assert refused.value.code == 503
        assert refused.value.headers["Retry-After"]
        with refused.value:
            body = json.loads(refused.value.read())
        assert body["error"]["reason"] in ("StoreUnavailable", "Indeterminate")
        assert elapsed < 10, f"took {elapsed:.1f}s"
        assert not cp.ready()  # /readyz says so too
        etcd.restart()
        wait_for(cp.ready, 30, "ready again once etcd is back")
        names = cli_json(["get", "zones"], cp.cli_env())
        assert isinstance(names, dict)
        assert {z["metadata"]["name"] for z in names["items"]} == {"before"}
        assert post(cp.url, token, "/api/v1/apply", {"kind": "List", "items": [zone_doc("after")]})[0] == 200
    finally:
        cp.kill()
        etcd.stop()
