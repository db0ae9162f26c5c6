"""The ``latency`` benchmark: its open-loop generator's response framing and percentiles, and one
smoke run (``python -m bench latency --quick``: the ``mesh`` scenario's processes plus nginx's TLS
port, 1 round of 1 s at 500 and 1,000 requests/s per path).

The smoke run checks that every scheduled request through the three paths completed with a 2xx;
it judges no latency (the machine is shared)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.http_setup import missing_binaries
from bench.latency_loadgen import percentiles, response_length

REPO = Path(__file__).resolve().parents[2]


def test_response_length_waits_for_the_head_then_counts_the_body() -> None:
    head = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 5\r\n"
    assert response_length(bytearray(head)) is None
    assert response_length(bytearray(head + b"\r\nhel")) == (200, len(head) + 2 + 5)
    assert response_length(bytearray(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length:0\r\n\r\n")) == (
        503,
        54,
    )
    with pytest.raises(ValueError, match="chunked"):
        response_length(bytearray(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"))


def test_percentiles_interpolate() -> None:
    figures = percentiles([float(i) for i in range(1, 1001)])
    assert figures["p50"] == pytest.approx(500.5)
    assert figures["p99"] == pytest.approx(990.01)
    assert figures["p999"] == pytest.approx(999.001)
    assert figures["max"] == 1000.0


@pytest.mark.slow
def test_quick_run(tmp_path: Path) -> None:
    missing = missing_binaries()
    if missing:
        message = (
            f"the latency benchmark needs {', '.join(missing)} (apt-get install nginx-light haproxy wrk)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    done = subprocess.run(
        [sys.executable, "-m", "bench", "latency", "--quick", "--results-dir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=150, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"
    [json_path] = tmp_path.glob("*-latency.json")
    assert json_path.with_suffix(".md").exists()
    record = json.loads(json_path.read_text())
    assert record["problems"] == []
    assert {r["path"] for r in record["runs"]} == {"meshgate", "haproxy", "direct"}
    for run in record["runs"]:
        # every request scheduled in the measured seconds completed, with a 2xx
        assert run["completed"] == run["scheduled"] > 0, run
        assert run["statuses"] == {"2xx": run["completed"]}
        assert run["errors"] == {}
