"""The ``proxies`` benchmark, one smoke run (``python -m bench proxies --quick``: a global CP with
1,000 services, two real zone CPs carrying 50 simulated proxies, two simulated zones, 20 writes).

It checks that the scenario works end to end and that every proxy and every zone received
every write, and each proxy the whole configuration; it judges no figure (the machine is
shared)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_run(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "proxies", "--quick", "--results-dir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"
    [json_path] = tmp_path.glob("*-proxies.json")
    assert json_path.with_suffix(".md").exists()
    record = json.loads(json_path.read_text())
    params = record["params"]
    propagation = record["propagation"]
    assert propagation["missing_proxies"] == 0
    assert propagation["missing_zones"] == 0
    writes = params["writes"] * params["rounds"]
    assert propagation["pooled"]["all_proxies"]["n"] == writes
    assert propagation["pooled"]["everywhere"]["n"] == writes
    seen = record["proxies_seen"]
    assert seen["proxies"] == params["proxies"]
    assert seen["proxies_with_every_write"] == params["proxies"]
    assert seen["failed"] == {}
    # Trust/mesh and one Cluster per Service
    assert seen["snapshot_resources"] == [params["resources"] + 1]
    zone_cps = record["zone_cps"]
    assert len(zone_cps) == params["proxy_zones"]
    assert set(record["zone_cp_memory"]) == set(zone_cps)
    assert sum(memory["proxies"] for memory in record["zone_cp_memory"].values()) == params["proxies"]
