"""The ``anycast`` scenario (root): how fast anycast moves clients away from a failure, and how
many requests that costs, on ``labs/two-region`` run by the lab runner.

The lab is copied to a temporary directory (so it never meets a lab someone has up from the
checkout), brought up with ``meshgate.lab.lifecycle.up``, checked with its ``checks.yml``, and
always taken down (``lifecycle.down``), also on a failure, Ctrl-C or SIGTERM. In between, R
rounds of three of its scenarios (``scenarios.yml``), interleaved: edge-failure, edge-drain,
zone-failure, edge-failure, ... Each is ``meshgate.lab.scenario_run.run_scenario`` under the
clients' ledger load, as ``meshgate lab scenario`` runs it, with the routers watched meanwhile
(``bench.anycast_watch``); before each, the lab's checks must pass again (the previous
scenario's restore is complete).
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from bench.anycast_report import headline, render
from bench.anycast_watch import WATCHES, WatchedLab
from bench.harness import (
    REPO,
    RESULTS_DIR,
    machine_info,
    median,
    say,
    terminate_as_exit,
    utc_stamp,
    workdir,
    write_results,
)

SCENARIO: Final = "anycast"
LAB: Final = REPO / "labs" / "two-region"
LAB_SCENARIOS: Final = ("edge-failure", "edge-drain", "zone-failure")
UP_TIMEOUT: Final = 400.0
#: figures of a lab scenario's outcome (meshgate.lab.scenario_run, meshgate.lab.ledger) summarised
COUNTS: Final = ("sent", "acknowledged", "failed", "failed_before_switch", "failed_after_switch", "lost",
                 "duplicated", "phantom", "retried", "executed_but_failed")  # fmt: skip
TIMES: Final = ("action_to_converged_s", "restore_to_restored_s")


@dataclass(frozen=True)
class Params:
    rounds: int = 3
    keep: bool = False
    quick: bool = False
    results_dir: str | None = None  # default: bench/results


def run(params: Params) -> dict[str, Any]:
    """The whole scenario (root only); returns the record that was written."""
    if os.geteuid() != 0:
        raise PermissionError("the anycast benchmark needs root (network namespaces)")
    stamp = utc_stamp()
    results_dir = Path(params.results_dir) if params.results_dir else RESULTS_DIR
    record: dict[str, Any] = {
        "scenario": SCENARIO,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "params": asdict(params),
        "setup": {"lab": "labs/two-region", "lab_scenarios": list(LAB_SCENARIOS)},
        "runs": [],
    }
    say(f"machine: {record['machine']['cpus']} CPUs, load {record['machine']['loadavg_at_start']}")
    with terminate_as_exit(), workdir(SCENARIO, keep=params.keep) as root:
        directory = root / "two-region"
        shutil.copytree(LAB, directory, ignore=shutil.ignore_patterns("clab-*"))
        try:
            _scenario(params, directory, record)
        except Exception as exc:
            record["error"] = f"{type(exc).__name__}: {exc}"
            say(f"anycast: {record['error']}")
        finally:
            record["down"] = _down(directory)
    record["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    record["summary"] = summarise(record["runs"])
    record["problems"] = problems(record)
    record["notes"] = notes(record)
    record["headline"] = headline(record["summary"])
    markdown = render(record)
    json_path, md_path = write_results(SCENARIO, record, markdown, stamp, directory=results_dir)
    print(markdown)
    shown = json_path.relative_to(Path.cwd()) if json_path.is_relative_to(Path.cwd()) else json_path
    print(f"\nresults: {shown}\n         {md_path.name}")
    return record


def _down(directory: Path) -> dict[str, Any]:
    from meshgate.lab.lifecycle import down

    say("taking the lab down")
    started = time.monotonic()
    try:
        reports = down(directory)
    except Exception as exc:
        say(f"lab down failed: {exc}")
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {"seconds": round(time.monotonic() - started, 1), "runs_removed": len(reports)}


def _scenario(params: Params, directory: Path, record: dict[str, Any]) -> None:
    from meshgate.lab.lifecycle import up
    from meshgate.lab.scenarios import load_scenarios

    scenarios = load_scenarios((directory / "scenarios.yml").read_text())
    load = scenarios.load
    record["setup"]["load"] = {"clients": list(load.clients), "threads_per_client": load.threads,
                               "seconds": load.seconds, "url": load.url, "method": load.method}  # fmt: skip
    say("bringing labs/two-region up (a temporary copy)")
    started = time.monotonic()
    lab = up(directory, timeout=UP_TIMEOUT)
    record["setup"]["up_s"] = round(time.monotonic() - started, 1)
    record["setup"]["namespaces"] = list(lab.state.namespaces)  # down removes them (the smoke test checks)
    say(f"lab up in {record['setup']['up_s']} s ({len(lab.nodes)} nodes)")
    first = _steady(lab, directory)
    record["setup"]["checks_after_up_s"] = first["seconds"]
    if first["failed"]:
        raise RuntimeError(f"the lab's checks fail after up: {first['failed']}")
    for i in range(params.rounds):
        for name in LAB_SCENARIOS:
            result = _one(lab, directory, scenarios, name)
            result["round"] = i + 1
            record["runs"].append(result)


def _steady(lab: Any, directory: Path) -> dict[str, Any]:
    """The lab's checks.yml, each until it passes or its deadline: the failing ones' names."""
    from meshgate.lab.check_run import run_checks
    from meshgate.lab.checks import load_checks

    started = time.monotonic()
    results = run_checks(lab, load_checks((directory / "checks.yml").read_text()))
    return {
        "seconds": round(time.monotonic() - started, 2),
        "failed": [r.check.name for r in results if not r.passed],
    }


def _one(lab: Any, directory: Path, scenarios: Any, name: str) -> dict[str, Any]:
    """One lab scenario with its watches; its figures, or the error that stopped it."""
    from meshgate.lab.check_run import CheckFailed, wait_for_check
    from meshgate.lab.errors import LabError
    from meshgate.lab.scenario_run import ScenarioFailed, run_scenario

    result: dict[str, Any] = {"scenario": name}
    steady = _steady(lab, directory)
    result["checks_before_s"] = steady["seconds"]
    if steady["failed"]:
        result["error"] = f"the lab is not steady before it: checks failing: {steady['failed']}"
        say(f"{name}: FAILED: {result['error']}")
        return result
    watched = WatchedLab(lab, WATCHES.get(name, []))
    started = time.monotonic()
    try:
        outcome = run_scenario(watched, scenarios, name, run_check=wait_for_check, say=say)
    except (ScenarioFailed, CheckFailed, LabError, subprocess.TimeoutExpired, OSError) as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"[:1000]
        say(f"{name}: FAILED: {result['error']}")
    else:
        result.update(passed=outcome.passed, problems=outcome.problems, **outcome.figures)
        say(
            f"{name}: converged {result.get('action_to_converged_s', 'n/a')} s; {result['sent']} sent, "
            f"{result['failed']} failed ({result['failed_before_switch']} before the switch), "
            f"{result['lost']} lost; ledger {result['ledger']}"
        )
    finally:
        result["watch"] = watched.figures()
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


# --- figures -------------------------------------------------------------------------------------


def _stats(values: Sequence[float]) -> dict[str, float | int]:
    if not values:
        return {"n": 0, "median": float("nan"), "min": float("nan"), "max": float("nan")}
    return {"n": len(values), "median": median(values), "min": min(values), "max": max(values)}


def summarise(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per lab scenario: medians (min, max) over its good rounds of each time and count; totals
    of the counts; how many rounds failed and how many held the ledger."""
    summary: dict[str, Any] = {}
    for name in LAB_SCENARIOS:
        mine = [r for r in runs if r["scenario"] == name]
        good = [r for r in mine if not r.get("error")]
        entry: dict[str, Any] = {
            "rounds_ok": len(good),
            "rounds_failed": len(mine) - len(good),
            "rounds_passed": sum(1 for r in good if r.get("passed")),
            "ledger_held": sum(1 for r in good if r.get("ledger") == "holds"),
            "times": {key: _stats([r[key] for r in good if r.get(key) is not None]) for key in TIMES},
            "watch": {},
            "counts": {key: _stats([r[key] for r in good]) for key in COUNTS},
            "totals": {key: sum(r[key] for r in good) for key in COUNTS},
        }
        for watch in WATCHES.get(name, []):
            entry["watch"][watch.figure] = watch_stats([r["watch"][watch.figure] for r in good
                                                         if watch.figure in r.get("watch", {})])  # fmt: skip
        summary[name] = entry
    return summary


def watch_stats(rounds: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A watched time over rounds. A change not seen while watched (the scenario ended first)
    counts as later than any seen one: the median is then an upper value, and infinite (no
    figure) when most rounds did not see it."""
    seen = [w["s"] for w in rounds if w.get("s") is not None]
    unseen = [w.get("not_seen_after_s", 0.0) for w in rounds if w.get("s") is None]
    stats: dict[str, Any] = dict(_stats(seen))
    if unseen:
        ordered = sorted([*seen, *[math.inf] * len(unseen)])
        middle = len(ordered) // 2  # no interpolation: inf - x is no number
        stats["median"] = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    stats["not_seen"] = len(unseen)
    stats["not_seen_after_s"] = min(unseen) if unseen else None
    resolution = [w["resolution_s"] for w in rounds if w.get("s") is not None]
    stats["median_resolution_s"] = median(resolution) if resolution else math.nan
    return stats


def notes(record: Mapping[str, Any]) -> list[str]:
    """What the rounds saw that is a figure, not a failure: a change not seen before the
    scenario ended (its restore came first)."""
    out = []
    for r in record.get("runs", []):
        for figure, seen in r.get("watch", {}).items():
            if seen.get("s") is None and not seen.get("error"):
                out.append(
                    f"round {r['round']} {r['scenario']}: {figure.removesuffix('_s')} not seen within "
                    f"{seen['not_seen_after_s']:.1f} s, when the scenario ended (its restore came first)"
                )
    return out


def problems(record: Mapping[str, Any]) -> list[str]:
    out = []
    if record.get("error"):
        out.append(f"the run stopped: {record['error']}")
    if record.get("down", {}).get("error"):
        out.append(f"lab down failed: {record['down']['error']}")
    for r in record.get("runs", []):
        where = f"round {r['round']} {r['scenario']}"
        if r.get("error"):
            out.append(f"{where}: {r['error']}")
            continue
        out += [f"{where}: {p}" for p in r.get("problems", [])]
        for figure, seen in r.get("watch", {}).items():
            if seen.get("s") is None and seen.get("error"):
                out.append(f"{where}: {figure}: the router could not be read: {seen['error']}")
    return out
