"""The ``mesh`` benchmark: how it reads wrk's script output, HAProxy's error logs and meshgate's
metrics, and one smoke run (``python -m bench mesh --quick``: nginx, a global CP, a zone CP, the
meshgate edge, ingress and local proxy, and the three HAProxy processes started by the bench, one
3 s wrk round per chain).

The smoke run checks that the scenario works end to end and that every request through both
chains got a 2xx with no socket error; it judges no figure (the machine is shared)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.http_setup import missing_binaries, parse_wrk_script
from bench.mesh_setup import count_haproxy_log, http_counts, parse_metrics

REPO = Path(__file__).resolve().parents[2]

WRK_SCRIPT_OUTPUT = """\
Running 3s test @ https://127.0.0.1:41000/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    10.12ms    2.02ms  60.20ms   97.10%
  6000 requests in 3.00s, 1.12MB read
  Non-2xx or 3xx responses: 2
Requests/sec:   2000.00
Transfer/sec:    382.81KB
meshgate-bench requests 6000
meshgate-bench duration_us 3000125
meshgate-bench bytes 1174000
meshgate-bench errors_connect 0
meshgate-bench errors_read 1
meshgate-bench errors_write 0
meshgate-bench errors_status 2
meshgate-bench errors_timeout 3
meshgate-bench p50_us 9512
meshgate-bench p90_us 12001
meshgate-bench p99_us 30250
meshgate-bench p99.9_us 55001
meshgate-bench max_us 60200
meshgate-bench mean_us 10120.5
"""


def test_parse_wrk_script_reads_exact_figures() -> None:
    figures = parse_wrk_script(WRK_SCRIPT_OUTPUT)
    assert figures["requests"] == 6000
    assert figures["duration_s"] == pytest.approx(3.000125)
    assert figures["rps"] == pytest.approx(6000 / 3.000125)
    assert figures["p50_s"] == pytest.approx(9.512e-3)
    assert figures["p999_s"] == pytest.approx(55.001e-3)
    assert figures["latency_max_s"] == pytest.approx(60.2e-3)
    assert figures["socket_errors"] == {"connect": 0, "read": 1, "write": 0, "timeout": 3}
    assert figures["socket_errors_total"] == 4
    assert figures["non_2xx_3xx"] == 2


def test_parse_wrk_script_refuses_missing_percentiles() -> None:
    text = WRK_SCRIPT_OUTPUT.replace("meshgate-bench p99.9_us 55001\n", "")
    with pytest.raises(ValueError, match=r"p99\.9_us"):
        parse_wrk_script(text)


def test_haproxy_log_cut_by_client_is_not_an_error(tmp_path: Path) -> None:
    log = tmp_path / "haproxy.log"
    log.write_bytes(
        b"\x00\x00"  # what emptying a file HAProxy writes to leaves before the next line
        b"127.0.0.1:1 [21/Nov/2026:20:30:32.444] ingress local_proxy/local 44/0/8901 37398 CD 53/53/52/52/0 0/0\n"
        b"127.0.0.1:2 [21/Nov/2026:20:30:32.444] ingress local_proxy/local 1/-1/2 0 SC 1/1/0/0/3 0/0\n"
        b"127.0.0.1:3 [21/Nov/2026:20:30:41.178] edge/1: Connection closed during SSL handshake\n"
        b"127.0.0.1:4 [21/Nov/2026:20:30:41.178] edge/1: SSL handshake failure\n"
        b"127.0.0.1:5 [21/Nov/2026:20:30:41.178] edge zone_ingress/ingress 0/0/0/1/1 503 217 - - SC-- "
        b'1/1/0/0/3 0/0 "GET / HTTP/1.1"\n'
        b"127.0.0.1:6 [21/Nov/2026:20:30:41.178] edge zone_ingress/ingress 0/0/0/-1/1 -1 0 - - CD-- "
        b'1/1/0/0/0 0/0 "GET / HTTP/1.1"\n'
        b"[NOTICE]   (1) : haproxy version is 2.6.12\n"
    )
    assert count_haproxy_log(log) == {
        "cut_by_client": 3,
        "errors": {"state SC": 1, "SSL handshake failure": 1, "state SC-- status 503": 1},
    }


def test_http_counts_sum_by_class() -> None:
    metrics = parse_metrics(
        "# TYPE meshgate_http_requests_total counter\n"
        'meshgate_http_requests_total{direction="edge",service="web",method="GET",code="2xx",zone="eu-west"} 7\n'
        'meshgate_http_requests_total{direction="edge",service="web",method="HEAD",code="2xx",zone="eu-west"} 1\n'
        'meshgate_http_requests_total{direction="edge",service="web",method="GET",code="5xx",zone="eu-west"} 2\n'
        'meshgate_http_upstream_errors_total{direction="edge",service="web",kind="connect"} 2\n'
        'meshgate_http_upstream_retries_total{direction="edge",service="web"} 0\n'
        'meshgate_proxy_listener_accepted_total{listener="ingress"} 4\n'
    )
    assert http_counts(metrics) == {
        "requests_2xx": 8,
        "requests_5xx": 2,
        "upstream_errors": 2,
        "upstream_retries": 0,
    }


@pytest.mark.slow
def test_quick_run(tmp_path: Path) -> None:
    missing = missing_binaries()
    if missing:
        message = f"the mesh benchmark needs {', '.join(missing)} (apt-get install nginx-light haproxy wrk)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    done = subprocess.run(
        [sys.executable, "-m", "bench", "mesh", "--quick", "--results-dir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=150, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"
    [json_path] = tmp_path.glob("*-mesh.json")
    assert json_path.with_suffix(".md").exists()
    record = json.loads(json_path.read_text())
    assert record["problems"] == []
    for name in ("meshgate", "haproxy"):
        summary = record["summary"][name]
        assert summary["rounds_ok"] == 1
        assert summary["requests_total"] > 0
        assert summary["non_2xx_3xx_total"] == 0
        assert summary["socket_errors_total"] == 0
    [mesh_round] = [r for r in record["rounds"] if r["chain"] == "meshgate"]
    assert mesh_round["counted"]["edge"]["requests_2xx"] >= mesh_round["requests"]
    assert mesh_round["counted"]["local"]["requests_2xx"] >= mesh_round["requests"]
    assert mesh_round["counted"]["ingress"]["connections_accepted"] >= 0  # the edge's pooled connections
    assert all(used > 0 for used in mesh_round["cpu_s"].values())  # every hop carried the requests
