"""The ``memory`` benchmark: how its client reads a response (canned bytes), how it summarises
measurements (ratios, the issue's aims), and one smoke run (``python -m bench memory --quick``:
the mesh, and a fresh meshgate local proxy, edge, HAProxy and nginx per measurement). The smoke
run checks that every kind of connection was set up, held and counted; it judges no figure."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.memory_client import Failed, connection_open, read_response
from bench.memory_run import read, summarise
from bench.memory_setup import missing_binaries

REPO = Path(__file__).resolve().parents[2]


def answer(data: bytes) -> tuple[int, bool]:
    """What the client makes of ``data`` sent by a server that then keeps the connection."""
    client, server = socket.socketpair()
    with client, server:
        server.sendall(data)
        client.settimeout(5)
        return read_response(client)


def test_the_client_reads_a_whole_response_by_length_or_chunks() -> None:
    assert answer(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello") == (200, False)
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    assert answer(chunked) == (200, False)
    assert answer(b"HTTP/1.1 503 No\r\nConnection: close\r\nContent-Length: 0\r\n\r\n") == (503, True)
    with pytest.raises(Failed, match="without a length"):
        answer(b"HTTP/1.1 200 OK\r\n\r\nbody")


def test_a_held_connection_counts_as_open_until_the_server_closes_it() -> None:
    client, server = socket.socketpair()
    with client, server:
        assert connection_open(client)
        server.close()
        assert not connection_open(client)


def _measurement(subject: str, kind: str, idle: int, base: int, held: int, n: int = 1000) -> dict[str, Any]:
    reading = {"rss": idle, "anon": idle // 2, "file": idle // 2, "pss": idle, "threads": 1}
    return {
        "round": 1, "subject": subject, "kind": kind, "idle": reading, "held": n,
        "per_1000_bytes": (held - base) / n * 1000, "per_1000_anon_bytes": (held - base) / n * 1000,
        "per_1000_pss_bytes": None, "sockets_added": n, "tls": None,
    }  # fmt: skip


def test_summary_ratios_and_aims() -> None:
    mb = 1_000_000
    measurements = [
        _measurement("meshgate-proxy", "plain", 45 * mb, 45 * mb, 50 * mb),
        _measurement("meshgate-proxy", "mtls", 45 * mb, 45 * mb, 70 * mb),
        _measurement("haproxy", "plain", 20 * mb, 20 * mb, 21 * mb),
        _measurement("haproxy", "mtls", 20 * mb, 20 * mb, 48 * mb),
        {"round": 1, "subject": "meshgate-edge", "kind": "https", "error": "RuntimeError: no"},
    ]
    summary = summarise(measurements, 1000)
    proxy = summary["subjects"]["meshgate-proxy"]
    assert proxy["idle_rss_bytes"] == 45 * mb
    assert proxy["kinds"]["mtls"]["per_1000_bytes"] == 25 * mb  # 25 KB per connection
    assert summary["ratios"]["meshgate-proxy/haproxy"]["plain"] == pytest.approx(5.0)
    assert summary["ratios"]["meshgate-proxy/haproxy"]["idle"] == pytest.approx(2.25)
    aims = {(a["subject"], a["aim"]): a["met"] for a in summary["aims"]}
    assert aims[("meshgate-proxy", "idle RSS under 40 MB")] is False
    assert aims[("meshgate-proxy", "under 30 KB per idle TLS connection (mtls)")] is True
    edge = summary["subjects"]["meshgate-edge"]
    assert edge["failed"] == 1
    assert edge["kinds"]["https"]["rounds_ok"] == 0


def test_a_reading_covers_the_process_and_counts_its_sockets() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        reading = read(os.getpid())
    assert reading.rss > 0
    assert reading.anon > 0
    assert reading.sockets >= 1
    assert reading.processes >= 1


@pytest.mark.slow
def test_quick_run(tmp_path: Path) -> None:
    missing = missing_binaries()
    if missing:
        message = f"the memory benchmark needs {', '.join(missing)} (apt-get install nginx-light haproxy)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    done = subprocess.run(
        [sys.executable, "-m", "bench", "memory", "--quick", "--results-dir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=400, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"
    [json_path] = tmp_path.glob("*-memory.json")
    assert json_path.with_suffix(".md").exists()
    record = json.loads(json_path.read_text())
    assert record["problems"] == []
    connections = record["params"]["connections"]
    kinds = {"meshgate-proxy": {"plain", "mtls"}, "meshgate-edge": {"plain", "https"},
             "haproxy": {"plain", "mtls", "https"}, "nginx": {"plain", "mtls", "https"}}  # fmt: skip
    for subject, expected in kinds.items():
        entry = record["summary"]["subjects"][subject]
        assert set(entry["kinds"]) == expected
        assert entry["idle_rss_bytes"] > 0
        for kind in expected:
            assert entry["kinds"][kind]["rounds_ok"] == 1
            assert entry["kinds"][kind]["held"] == connections
            # the N connections, give or take a socket the proxy opened or closed meanwhile
            # (its pool, its link to the zone CP, an edge's probe)
            assert entry["kinds"][kind]["sockets_added"] >= connections * 0.95
    assert {a["subject"] for a in record["summary"]["aims"]} == {"meshgate-proxy", "meshgate-edge"}
