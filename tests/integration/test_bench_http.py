"""The ``http`` benchmark: how it reads wrk's output and the nginx proxy's access log, and one
smoke run (``python -m bench http --quick``: nginx, the meshgate node, HAProxy and the nginx proxy
started by the bench, one 3 s wrk round each).

The smoke run checks that the scenario works end to end and that the three proxies answered every
request with a 2xx and no socket error; it judges no figure (the machine is shared)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.http_setup import count_nginx_log, missing_binaries, parse_wrk

REPO = Path(__file__).resolve().parents[2]

WRK_OUTPUT = """\
Running 3s test @ http://127.0.0.1:41000/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   850.12us    1.02ms    1.20s    97.10%
    Req/Sec    12.40k     1.10k   14.00k    70.00%
  Latency Distribution
     50%  612.00us
     75%    1.05ms
     90%    2.50ms
     99%    1.01s
  37012 requests in 3.00s, 8.12MB read
  Socket errors: connect 1, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 4
Requests/sec:  12337.33
Transfer/sec:      2.71MB
"""


def test_parse_wrk_reads_every_unit() -> None:
    figures = parse_wrk(WRK_OUTPUT)
    assert figures["requests"] == 37012
    assert figures["duration_s"] == pytest.approx(3.0)
    assert figures["rps"] == pytest.approx(12337.33)
    assert figures["p50_s"] == pytest.approx(612e-6)
    assert figures["p75_s"] == pytest.approx(1.05e-3)
    assert figures["p99_s"] == pytest.approx(1.01)
    assert figures["latency_avg_s"] == pytest.approx(850.12e-6)
    assert figures["latency_max_s"] == pytest.approx(1.2)
    assert figures["socket_errors"] == {"connect": 1, "read": 2, "write": 0, "timeout": 3}
    assert figures["socket_errors_total"] == 6
    assert figures["non_2xx_3xx"] == 4
    assert figures["bytes_read"] == round(8.12 * (1 << 20))
    assert "p999_s" not in figures  # wrk's own report has no p99.9


def test_parse_wrk_takes_p999_from_the_scripts_lines() -> None:
    figures = parse_wrk(WRK_OUTPUT + "meshgate-bench p99_us 1010000\nmeshgate-bench p99.9_us 1150000\n")
    assert figures["p999_s"] == pytest.approx(1.15)
    assert figures["p99_s"] == pytest.approx(1.01)


def test_parse_wrk_without_errors_or_latency_refuses_missing_percentiles() -> None:
    clean = "\n".join(
        line for line in WRK_OUTPUT.splitlines() if "Socket errors" not in line and "Non-2xx" not in line
    )
    figures = parse_wrk(clean)
    assert figures["socket_errors_total"] == 0
    assert figures["non_2xx_3xx"] == 0
    with pytest.raises(ValueError, match="50% latency"):
        parse_wrk(clean.replace("Latency Distribution", "no distribution"))


def test_count_nginx_log_sorts_answers_cuts_and_retries(tmp_path: Path) -> None:
    log = tmp_path / "nginx-proxy-access.log"
    line = (
        '{{"ts":1.0,"id":"ab","client":"127.0.0.1","method":"GET","path":"/","status":{status},'
        '"duration_s":0.001,"bytes_in":40,"bytes_out":{out},"upstream":"{up}","upstream_status":"{ups}",'
        '"upstream_s":"0.001"}}\n'
    )
    log.write_text(
        line.format(status=200, out=250, up="127.0.0.1:1", ups="200") * 3
        + line.format(status=499, out=0, up="127.0.0.1:1", ups="")
        + line.format(status=200, out=250, up="127.0.0.1:1, 127.0.0.1:1", ups="502, 200")
        + line.format(status=502, out=150, up="127.0.0.1:1", ups="502")
        + '{"ts":1.0,"id":"cd","status":20'  # a line cut short: not counted
    )
    counts = count_nginx_log(log)
    assert counts.lines == 6
    assert counts.by_class == {"2xx": 4, "5xx": 1}
    assert counts.cut_by_client == 1
    assert counts.other_errors == {"sent upstream 2 times": 1}


@pytest.mark.slow
def test_quick_run(tmp_path: Path) -> None:
    missing = missing_binaries()
    if missing:
        message = f"the http benchmark needs {', '.join(missing)} (apt-get install nginx-light haproxy wrk)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    done = subprocess.run(
        [sys.executable, "-m", "bench", "http", "--quick", "--results-dir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"
    [json_path] = tmp_path.glob("*-http.json")
    assert json_path.with_suffix(".md").exists()
    record = json.loads(json_path.read_text())
    assert record["problems"] == []
    assert [r["proxy"] for r in record["rounds"]] == ["meshgate", "haproxy", "nginx_proxy"]
    for name in ("meshgate", "haproxy", "nginx_proxy"):
        summary = record["summary"][name]
        assert summary["rounds_ok"] == 1
        assert summary["median_p999_s"] >= summary["median_p99_s"] > 0
        assert summary["requests_total"] > 0
        assert summary["non_2xx_3xx_total"] == 0
        assert sum(summary["socket_errors_total"].values()) == 0
        assert summary["logged_by_class_total"].get("2xx", 0) >= summary["requests_total"]
    for peer in ("haproxy", "nginx_proxy"):
        assert record["summary"][f"meshgate_over_{peer}"]["rps"] > 0
    assert record["nginx_proxy_error_log"] == []
    stats = record["meshgate_stats"]["http"]["inbound/web"]
    assert stats["upstream_errors"] == {}
    assert stats["refused"] == {}
