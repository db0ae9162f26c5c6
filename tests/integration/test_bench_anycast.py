"""The ``anycast`` benchmark: how it reads the routers (canned ``birdc`` and ``vtysh`` output from
labs/two-region), how it starts its watches when a scenario acts (a fake lab), and one smoke run
as root (``python -m bench anycast --quick``: the lab up, one round of edge-failure, edge-drain
and zone-failure, the lab down). The smoke run judges no figure."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from bench.anycast_run import watch_stats
from bench.anycast_watch import (
    Watch,
    WatchedLab,
    bird_edge_path_gshut,
    bird_has_edge_path,
    bird_routes,
    frr_has_edge_path,
)
from meshgate.netns import list_namespaces
from tests.support.netns import require_root

REPO = Path(__file__).resolve().parents[2]

BIRD_BOTH = """\
BIRD 2.0.12 ready.
Table master4:
203.0.113.10/32      unicast [edge_eu 20:46:42.536] * (100) [AS65101i]
\tvia 10.1.1.2 on eth1
\tType: BGP univ
\tBGP.origin: IGP
\tBGP.as_path: 65101
\tBGP.next_hop: 10.1.1.2
\tBGP.med: 0
\tBGP.local_pref: 100
\tBGP.community: (65000,100)
                     unicast [rtr_us 20:46:44.184] (100) [AS65102i]
\tvia 10.0.0.2 on eth9
\tType: BGP univ
\tBGP.origin: IGP
\tBGP.as_path: 65002 65102
\tBGP.next_hop: 10.0.0.2
\tBGP.local_pref: 100
\tBGP.community: (65000,100)
"""

BIRD_DRAINING = """\
BIRD 2.0.12 ready.
Table master4:
203.0.113.10/32      unicast [rtr_us 20:46:44.184] * (100) [AS65102i]
\tvia 10.0.0.2 on eth9
\tType: BGP univ
\tBGP.as_path: 65002 65102
\tBGP.community: (65000,100)
                     unicast [edge_eu 20:47:24.726] (100) [AS65101i]
\tvia 10.1.1.2 on eth1
\tType: BGP univ
\tBGP.as_path: 65101
\tBGP.local_pref: 0
\tBGP.community: (65000,100) (65535,0)
"""

BIRD_GONE = """\
BIRD 2.0.12 ready.
Table master4:
203.0.113.10/32      unicast [rtr_us 20:46:44.184] * (100) [AS65102i]
\tvia 10.0.0.2 on eth9
\tBGP.as_path: 65002 65102
\tBGP.community: (65000,100)
"""


def frr(*aspaths: str) -> str:
    return json.dumps(
        {
            "prefix": "203.0.113.10/32",
            "paths": [{"aspath": {"string": a, "length": len(a.split())}} for a in aspaths],
        }
    )


def test_bird_routes_by_protocol() -> None:
    routes = bird_routes(BIRD_BOTH)
    assert sorted(routes) == ["edge_eu", "rtr_us"]
    assert "BGP.as_path: 65101" in routes["edge_eu"]
    assert bird_has_edge_path(BIRD_BOTH)
    assert not bird_edge_path_gshut(BIRD_BOTH)


def test_a_draining_edges_path_carries_graceful_shutdown() -> None:
    assert bird_has_edge_path(BIRD_DRAINING)
    assert bird_edge_path_gshut(BIRD_DRAINING)
    assert not bird_has_edge_path(BIRD_GONE)
    assert not bird_edge_path_gshut(BIRD_GONE)
    assert not bird_has_edge_path("BIRD 2.0.12 ready.\nNetwork not found\n")


def test_frr_paths_through_the_edge() -> None:
    assert frr_has_edge_path(frr("65102", "65001 65101"))
    assert not frr_has_edge_path(frr("65102"))
    assert not frr_has_edge_path(frr("65001 651011"))  # an AS number, not a substring
    assert not frr_has_edge_path("{}\n")
    assert not frr_has_edge_path("not json")


class FakeLab:
    """Answers ``exec`` from a script of outputs per node; records kills and starts."""

    def __init__(self, outputs: Mapping[str, list[str]]) -> None:
        self.outputs = {node: list(texts) for node, texts in outputs.items()}
        self.nodes: dict[str, Any] = {}
        self.calls: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def netns(self, node: str) -> str:
        return f"ns-{node}"

    def exec(self, node: str, argv: list[str], *, timeout: float = 30, input: str | None = None) -> Any:
        with self.lock:
            self.calls.append(("exec", node))
            texts = self.outputs.get(node, [""])
            text = texts.pop(0) if len(texts) > 1 else texts[0]
        return subprocess.CompletedProcess(argv, 0, text, "")

    def kill_node(self, node: str, *, signal: int) -> None:
        self.calls.append(("kill", node))

    def start_node(self, node: str) -> None:
        self.calls.append(("start", node))


def test_watches_start_when_the_scenario_acts_and_report_when_seen() -> None:
    lab = FakeLab({"rtr-eu": [BIRD_BOTH, BIRD_BOTH, BIRD_GONE]})
    watch = Watch("gone_s", "rtr-eu", ["birdc"], lambda out: not bird_has_edge_path(out))
    watched = WatchedLab(lab, [watch])  # type: ignore[arg-type]  # a fake RunningLab
    watched.exec("global", ["meshgate", "get", "zones"])  # not an action: nothing starts
    assert watched.watcher is None
    watched.kill_node("edge-eu", signal=9)
    watcher = watched.watcher
    assert watcher is not None
    deadline = time.monotonic() + 10
    while not watcher.finished() and time.monotonic() < deadline:
        time.sleep(0.01)
    figures = watched.figures()
    assert figures["gone_s"]["polls"] == 3
    assert figures["gone_s"]["s"] is not None
    assert ("kill", "edge-eu") in lab.calls


def test_a_drain_starts_the_watches_too_and_what_is_never_seen_is_reported() -> None:
    lab = FakeLab({"rtr-eu": [BIRD_BOTH]})
    watch = Watch("gone_s", "rtr-eu", ["birdc"], lambda out: not bird_has_edge_path(out))
    watched = WatchedLab(lab, [watch])  # type: ignore[arg-type]  # a fake RunningLab
    watched.exec("global", ["meshgate", "edge", "drain", "edge-eu", "--reason", "x"])
    assert watched.watcher is not None
    figures = watched.figures()  # stops the polling
    assert figures["gone_s"]["s"] is None
    assert figures["gone_s"]["not_seen_after_s"] >= 0  # watched for that long: a lower bound
    assert "error" not in figures["gone_s"]  # the router answered: not a failure


def test_a_change_not_seen_counts_as_later_than_any_seen_one() -> None:
    seen = [{"s": 3.35, "resolution_s": 0.1}, {"s": 3.46, "resolution_s": 0.08}]
    unseen = {"s": None, "not_seen_after_s": 11.9}
    stats = watch_stats([seen[0], unseen, seen[1]])
    assert stats["median"] == 3.46
    assert (stats["n"], stats["not_seen"], stats["not_seen_after_s"]) == (2, 1, 11.9)
    assert math.isinf(watch_stats([seen[0], unseen, unseen])["median"])
    assert watch_stats(seen)["median"] == pytest.approx(3.405)


@pytest.mark.root
@pytest.mark.slow
def test_quick_run(tmp_path: Path) -> None:
    require_root()
    done = subprocess.run(
        [sys.executable, "-m", "bench", "anycast", "--quick", "--results-dir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"
    [json_path] = tmp_path.glob("*-anycast.json")
    assert json_path.with_suffix(".md").exists()
    record = json.loads(json_path.read_text())
    assert record["problems"] == []
    assert "seconds" in record["down"]
    for name in ("edge-failure", "edge-drain", "zone-failure"):
        entry = record["summary"][name]
        assert entry["rounds_ok"] == 1
        assert entry["ledger_held"] == 1
        assert entry["totals"]["sent"] > 100
    assert {row["figure"] for row in record["headline"]} >= {"anycast: drain → route withdrawn"}
    ours = set(record["setup"]["namespaces"])
    assert len(ours) == 16  # the lab's own and one per node
    assert ours.isdisjoint(list_namespaces())  # the lab is down
