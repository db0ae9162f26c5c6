"""``meshgate workload``: answers, the ledger of tagged requests, its own paths; the command
line (listens, says where, stops on SIGTERM and SIGINT)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner

from meshgate.cli.main import cli
from meshgate.workload.ledger import Ledger
from meshgate.workload.server import Workload, build_app


class Ticks:
    """A clock that moves one second per reading."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        self.t += 1
        return self.t


@pytest.fixture
async def client() -> AsyncIterator[TestClient[object, object]]:
    workload = Workload("web-eu-1", "eu-west", Ledger(limit=3, now=Ticks()))
    async with TestClient(TestServer(build_app(workload))) as test_client:
        yield test_client


async def received(client: TestClient[object, object]) -> tuple[list[dict[str, object]], int, int]:
    response = await client.get("/_meshgate/received")
    assert response.status == 200
    assert response.content_type == "application/json"
    total, dropped = int(response.headers["X-Received-Total"]), int(response.headers["X-Received-Dropped"])
    return json.loads(await response.text()), total, dropped


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
async def test_every_method_and_path_is_answered_naming_the_instance_and_zone(
    client: TestClient[object, object], method: str
) -> None:
    response = await client.request(method, "/any/path?q=1", data=b"x" * 100_000)
    assert response.status == 200
    assert response.headers["X-Workload"] == "web-eu-1"
    assert await response.text() == "hello from web-eu-1 in zone eu-west\n"


async def test_head_is_answered_without_a_body(client: TestClient[object, object]) -> None:
    response = await client.head("/")
    assert response.status == 200
    assert response.headers["X-Workload"] == "web-eu-1"
    assert await response.read() == b""


async def test_a_workload_without_a_zone_names_itself() -> None:
    async with TestClient(TestServer(build_app(Workload("solo")))) as plain:
        response = await plain.get("/")
        assert await response.text() == "hello from solo\n"
        assert "X-Workload-Zone" not in response.headers


async def test_tagged_requests_are_recorded_untagged_ones_are_not(client: TestClient[object, object]) -> None:
    await client.post("/orders?id=7", data=b"{}", headers={"X-Request-Tag": "run1-0001"})
    await client.get("/untagged")
    await client.delete("/orders/7", headers={"X-Request-Tag": "run1-0002"})
    records, total, dropped = await received(client)
    assert records == [
        {"method": "POST", "path": "/orders?id=7", "tag": "run1-0001", "time": 1001.0},
        {"method": "DELETE", "path": "/orders/7", "tag": "run1-0002", "time": 1002.0},
    ]
    assert (total, dropped) == (2, 0)


async def test_its_own_paths_are_never_recorded(client: TestClient[object, object]) -> None:
    tag = {"X-Request-Tag": "probe"}
    assert (await client.get("/_meshgate/healthz", headers=tag)).status == 200
    assert (await client.get("/_meshgate/received", headers=tag)).status == 200
    assert (await client.get("/_meshgate/other", headers=tag)).status == 404
    assert (await client.post("/_meshgate/received", headers=tag)).status == 405
    assert await received(client) == ([], 0, 0)


async def test_the_ledger_keeps_the_newest_and_counts_what_it_dropped(
    client: TestClient[object, object],
) -> None:
    for i in range(5):
        await client.get(f"/r/{i}", headers={"X-Request-Tag": f"t{i}"})
    records, total, dropped = await received(client)
    assert [r["tag"] for r in records] == ["t2", "t3", "t4"]
    assert (total, dropped) == (5, 2)


def test_a_ledger_keeps_at_least_one_record() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Ledger(limit=0)


def test_listen_must_be_host_and_port() -> None:
    result = CliRunner().invoke(cli, ["workload", "run", "--listen", "nowhere", "--name", "w"])
    assert result.exit_code == 2
    assert "is not HOST:PORT" in result.output


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_the_command_serves_and_stops_cleanly_on_a_signal(signum: int) -> None:
    args = [sys.executable, "-m", "meshgate", "workload", "run", "--listen", "127.0.0.1:0", "--name", "w1"]
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()  # printed once listening
            assert line.startswith("workload w1 listening on http://127.0.0.1:"), line
            proc.send_signal(signum)
            assert proc.wait(timeout=20) == 0
            assert proc.stderr is not None
            assert proc.stderr.read() == ""
        finally:
            proc.kill()


def test_a_killed_workload_started_again_still_lists_what_it_received(tmp_path: Path) -> None:
    journal = tmp_path / "received.jsonl"
    args = [sys.executable, "-m", "meshgate", "workload", "run", "--listen", "127.0.0.1:0", "--name", "w1",
            "--journal", str(journal)]  # fmt: skip

    def start() -> tuple[subprocess.Popen[str], str]:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        return proc, proc.stdout.readline().strip().rpartition(" ")[2]

    first, url = start()
    with first:
        for tag in ("t-1", "t-2"):
            request = urllib.request.Request(f"{url}/x", headers={"X-Request-Tag": tag})
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 200
        first.kill()  # SIGKILL: no chance to flush anything at exit
        first.wait()
    journal.write_text(journal.read_text() + '{"method": "GET", "tag": "cut-sh')  # a line a kill cut
    second, url = start()
    with second:
        request = urllib.request.Request(f"{url}/x", headers={"X-Request-Tag": "t-3"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        with urllib.request.urlopen(f"{url}/_meshgate/received", timeout=10) as response:
            assert [r["tag"] for r in json.loads(response.read())] == ["t-1", "t-2", "t-3"]
        second.terminate()
        second.wait()
    ledger = Ledger(journal=journal)
    assert len(ledger.records()) == 3  # the cut line stays skipped
    ledger.close()
