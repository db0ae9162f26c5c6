"""The suite (``python -m bench``): every scenario of a registry in turn, one combined result; a
scenario that fails is recorded and the suite goes on; one that needs root is skipped without
it; ``--reuse`` takes an earlier results file. Scenarios are fakes here (the real ones have their
own smoke runs: ``python -m bench --quick`` whole takes several minutes), except for one run of
the real command line that reuses a results file."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from bench import harness, suite

REPO = Path(__file__).resolve().parents[2]

HTTP_RECORD: dict[str, Any] = {
    "scenario": "http",
    "started_at": "2026-11-21T17:40:09+00:00",
    "machine": {"git_commit": "abc"},
    "params": {"quick": False, "rounds": 3},
    "summary": {
        "meshgate": {"median_rps": 8000.0, "median_cpu_us_per_request": 120.0, "median_p99_s": 0.012},
        "haproxy": {"median_rps": 24000.0, "median_cpu_us_per_request": 40.0, "median_p99_s": 0.005},
    },
    "problems": [],
}


def fake_runner(calls: list[Sequence[str]]) -> suite.Runner:
    """Scenarios as ``python -m bench NAME --results-dir DIR`` would run them."""

    def run(argv: Sequence[str]) -> int:
        calls.append(list(argv))
        name, directory = argv[0], Path(argv[argv.index("--results-dir") + 1])
        if name == "boom":
            raise RuntimeError("the workload did not start")
        record: dict[str, Any] = {
            "scenario": name,
            "started_at": "now",
            "params": {"quick": "--quick" in argv},
        }
        if name == "alpha":
            record["headline"] = [suite.row("alpha: idle RSS", "MB", 45.0, 20.0, "HAProxy", "< 40 MB", False)]
        if name == "http":
            record = HTTP_RECORD
        harness.write_results(name, record, "# table\n", "20260101T000000Z", directory=directory)
        return 1 if name == "grumpy" else 0

    return run


def test_every_scenario_in_turn_failures_recorded_root_skipped(tmp_path: Path) -> None:
    calls: list[Sequence[str]] = []
    registry = [("alpha", False), ("boom", False), ("http", False), ("grumpy", False), ("rooty", True)]
    record = suite.run(registry, fake_runner(calls), results_dir=tmp_path, quick=True, is_root=False)
    assert [c[0] for c in calls] == ["alpha", "boom", "http", "grumpy"]
    assert all("--quick" in c for c in calls)
    status = {name: entry["status"] for name, entry in record["scenarios"].items()}
    assert status == {"alpha": "ok", "boom": "failed", "http": "ok", "grumpy": "failed", "rooty": "skipped"}
    assert "the workload did not start" in record["scenarios"]["boom"]["note"]
    assert record["scenarios"]["grumpy"]["note"] == "exit status 1"
    http_rows = {r["figure"]: r for r in record["scenarios"]["http"]["headline"]}
    assert http_rows["http: one hop, requests/s"]["ratio"] == pytest.approx(1 / 3)
    assert record["scenarios"]["alpha"]["headline"][0]["aim_met"] is False
    # Each scenario's files were moved beside the combined result; no staging directory is left.
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "20260101T000000Z-alpha.json" in names
    assert not [n for n in names if n.startswith(".")]
    [combined] = [p for p in tmp_path.glob("*.json") if "-" not in p.name]
    assert json.loads(combined.read_text())["scenarios"]["rooty"]["status"] == "skipped"
    table = combined.with_suffix(".md").read_text()
    assert "| alpha: idle RSS" in table
    assert "**not met**" in table
    assert "boom: failed" in table


def test_only_skip_and_reuse(tmp_path: Path) -> None:
    earlier = tmp_path / "20261121T174009Z-http.json"
    earlier.write_text(json.dumps(HTTP_RECORD))
    calls: list[Sequence[str]] = []
    registry = [("alpha", False), ("http", False), ("grumpy", False)]
    record = suite.run(
        registry, fake_runner(calls), results_dir=tmp_path, only=("alpha", "http"), reuse={"http": ""}
    )
    assert [c[0] for c in calls] == ["alpha"]
    http = record["scenarios"]["http"]
    assert http["status"] == "reused"
    assert "20261121T174009Z-http.json" in http["note"]
    assert http["started_at"] == HTTP_RECORD["started_at"]
    assert record["scenarios"]["grumpy"] == {"status": "left out", "note": "--only"}


def test_results_into_redirects_scenarios_without_a_results_dir(tmp_path: Path) -> None:
    with suite.results_into(tmp_path):
        json_path, _ = harness.write_results("l4", {"x": 1}, "md\n", "20260101T000000Z")
    assert json_path.parent == tmp_path
    assert harness.RESULTS_DIR == REPO / "bench" / "results"


def test_the_command_line_reusing_a_results_file(tmp_path: Path) -> None:
    earlier = tmp_path / "earlier-http.json"
    earlier.write_text(json.dumps(HTTP_RECORD))
    results = tmp_path / "results"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--only", "http", "--reuse", f"http={earlier}", "--results-dir", str(results)],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    [combined] = results.glob("*.json")
    record = json.loads(combined.read_text())
    assert record["scenarios"]["http"]["status"] == "reused"
    assert "http: one hop, requests/s" in done.stdout
    unknown = subprocess.run(
        [sys.executable, "-m", "bench", "all", "--only", "nosuch", "--results-dir", str(results)],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert unknown.returncode == 2
    assert "no scenario nosuch" in unknown.stderr


@pytest.mark.parametrize(
    "scenario", ["sync", "proxies", "http", "l4", "mesh", "latency", "memory", "anycast"]
)
def test_suite_options_before_a_scenario_name_apply_to_the_scenario(scenario: str) -> None:
    from bench.__main__ import parse

    args = parse(["--quick", "--results-dir", "/tmp/elsewhere", scenario])
    assert args.quick is True
    assert args.results_dir == "/tmp/elsewhere"
    assert parse([scenario]).quick is False


def test_suite_only_options_with_a_scenario_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    from bench.__main__ import parse

    with pytest.raises(SystemExit) as exit_info:
        parse(["--skip", "l4", "http"])
    assert exit_info.value.code == 2
    assert "--only, --skip and --reuse are for the suite" in capsys.readouterr().err
