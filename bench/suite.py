"""The suite: ``python -m bench`` (or ``python -m bench all``) runs every scenario of
``bench.__main__.SUITE`` in turn and writes one combined result.

Each scenario runs in this process through the same entry point as ``python -m bench NAME``
(with ``--quick`` when the suite has it), its own results written to a staging directory and
then moved beside the combined result, so the suite knows exactly which record is whose. A
scenario that fails (an exception, a non-zero exit status) is recorded as failed and the suite
goes on; the exit status is then 1. A scenario that needs root is skipped with a note when the
suite is not root. ``--reuse NAME[=FILE]`` takes a scenario's figures from an earlier results
file (the newest ``*-NAME.json`` when no file is given) instead of running it; the combined
result says so, with that file's date.

The combined record, ``<results>/<UTC time>.json`` and ``.md``: the machine and commit, the
suite's parameters, and per scenario its status, duration, parameters, results file and
headline figures (meshgate, its peer, the ratio, the issue's aim and whether it is met). A
scenario's record may carry its own ``headline`` rows; for the others the rows are read from
their summaries here (``HEADLINES``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from bench import harness

#: runs one scenario as ``python -m bench ARGV`` would; its exit status
Runner = Callable[[Sequence[str]], int]
#: exit statuses that mean the run was interrupted (Ctrl-C, SIGTERM): the suite stops there
INTERRUPTED: Final = (130, 143)


def add_suite_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick",
        dest="suite_quick",
        action="store_true",
        help="pass --quick to every scenario (a short pass)",
    )
    parser.add_argument(
        "--only", dest="suite_only", type=_names, help="run only these scenarios (comma-separated)"
    )
    parser.add_argument(
        "--skip", dest="suite_skip", type=_names, help="leave these scenarios out (comma-separated)"
    )
    parser.add_argument(
        "--reuse",
        dest="suite_reuse",
        action="append",
        metavar="NAME[=FILE]",
        help="take NAME's figures from FILE (default: its newest results file) instead of running it; repeatable",
    )
    parser.add_argument(
        "--results-dir",
        dest="suite_results_dir",
        metavar="DIR",
        help="write every result there instead of bench/results/",
    )


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


@contextlib.contextmanager
def results_into(directory: str | Path | None) -> Iterator[None]:
    """For scenarios whose ``run`` has no results directory of its own (``sync``, ``l4``): while
    inside, ``harness.write_results`` writes to ``directory`` (nothing changes when None)."""
    if directory is None:
        yield
        return
    previous = harness.RESULTS_DIR
    harness.RESULTS_DIR = Path(directory)
    try:
        yield
    finally:
        harness.RESULTS_DIR = previous


# --- the run -------------------------------------------------------------------------------------


def run_suite(args: argparse.Namespace, suite: Sequence[tuple[str, bool]], runner: Runner) -> int:
    """``python -m bench [all]``: every scenario through ``runner`` (``bench.__main__.main``);
    the exit status (1 when a scenario failed)."""
    known = {name for name, _ in suite}
    unknown = sorted((set(args.suite_only or ()) | set(args.suite_skip or ()) | set(_reused(args))) - known)
    if unknown:
        print(
            f"no scenario {', '.join(unknown)} (scenarios: {', '.join(n for n, _ in suite)})", file=sys.stderr
        )
        return 2
    results_dir = Path(args.suite_results_dir) if args.suite_results_dir else harness.RESULTS_DIR
    record = run(
        suite,
        runner,
        results_dir=results_dir,
        quick=args.suite_quick,
        only=args.suite_only or (),
        skip=args.suite_skip or (),
        reuse=_reused(args),
        is_root=os.geteuid() == 0,
    )
    return 1 if any(s["status"] == "failed" for s in record["scenarios"].values()) else 0


def _reused(args: argparse.Namespace) -> dict[str, str]:
    """``--reuse NAME[=FILE]`` as name -> file ("" for the newest)."""
    out = {}
    for item in args.suite_reuse or ():
        name, _, file = item.partition("=")
        out[name.strip()] = file.strip()
    return out


def run(
    suite: Sequence[tuple[str, bool]],
    runner: Runner,
    *,
    results_dir: Path,
    quick: bool = False,
    only: Sequence[str] = (),
    skip: Sequence[str] = (),
    reuse: Mapping[str, str] | None = None,
    is_root: bool = False,
) -> dict[str, Any]:
    """Every scenario in turn; the combined record (written, and its table printed)."""
    reuse = dict(reuse or {})
    stamp = harness.utc_stamp()
    results_dir.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {
        "suite": [name for name, _ in suite],
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": harness.machine_info(),
        "params": {"quick": quick, "only": list(only), "skip": list(skip), "reuse": reuse, "root": is_root},
        "scenarios": {},
    }
    interrupted: BaseException | None = None
    with harness.terminate_as_exit():  # SIGTERM between scenarios stops the suite as Ctrl-C does
        for name, needs_root in suite:
            if (only and name not in only) or name in skip:
                record["scenarios"][name] = {"status": "left out", "note": "--only" if only else "--skip"}
                continue
            try:
                if name in reuse:
                    entry = _reuse(name, reuse[name], results_dir)
                elif needs_root and not is_root:
                    entry = {
                        "status": "skipped",
                        "note": "needs root (network namespaces): run the suite as root",
                    }
                elif interrupted is not None:
                    entry = {"status": "not run", "note": "the suite was interrupted"}
                else:
                    harness.say(f"suite: {name}{' --quick' if quick else ''}")
                    entry, interrupted = _run_one(name, runner, results_dir, stamp, quick)
            except (KeyboardInterrupt, SystemExit) as exc:
                interrupted = exc
                entry = {"status": "not run", "note": "the suite was interrupted"}
            entry.setdefault("headline", [])
            record["scenarios"][name] = entry
            status = entry["status"] + (f" ({entry['note']})" if entry.get("note") else "")
            harness.say(f"suite: {name}: {status}")
    record["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    markdown = render(record)
    json_path, md_path = results_dir / f"{stamp}.json", results_dir / f"{stamp}.md"
    for path, text in (
        (json_path, json.dumps(_finite(record), indent=2, allow_nan=False) + "\n"),
        (md_path, markdown),
    ):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    print(markdown)
    print(f"\nsuite results: {json_path}\n               {md_path.name}")
    if interrupted is not None:
        raise interrupted
    return record


def _run_one(
    name: str, runner: Runner, results_dir: Path, stamp: str, quick: bool
) -> tuple[dict[str, Any], BaseException | None]:
    """One scenario through ``runner``, its results written to a staging directory first."""
    staging = results_dir / f".{stamp}-{name}"
    argv = [name, *(["--quick"] if quick else []), "--results-dir", str(staging)]
    entry: dict[str, Any] = {"argv": argv}
    started = time.monotonic()
    interrupted: BaseException | None = None
    try:
        code = runner(argv)
        entry["exit_status"] = code
        entry["status"] = "ok" if code == 0 else "failed"
        if code:
            entry["note"] = f"exit status {code}"
    except (KeyboardInterrupt, SystemExit) as exc:
        code = 130 if isinstance(exc, KeyboardInterrupt) else exc.code if isinstance(exc.code, int) else 1
        entry.update(status="failed", exit_status=code, note=f"{type(exc).__name__} ({code})")
        if code in INTERRUPTED or isinstance(exc, KeyboardInterrupt):
            interrupted = exc
    except Exception as exc:
        entry.update(status="failed", note=f"{type(exc).__name__}: {exc}"[:500])
        entry["traceback"] = traceback.format_exc()[-4000:]
        print(entry["traceback"], file=sys.stderr)
    entry["seconds"] = round(time.monotonic() - started, 1)
    scenario_record, files = _collect(staging, results_dir)
    entry["results_files"] = [str(_shown(f)) for f in files]
    if scenario_record is not None:
        entry.update(_from_record(name, scenario_record))
    elif entry["status"] == "ok":
        entry.update(status="failed", note="the scenario wrote no results file")
    return entry, interrupted


def _collect(staging: Path, results_dir: Path) -> tuple[dict[str, Any] | None, list[Path]]:
    """Move what a scenario wrote from its staging directory to the results directory; its
    record (the one JSON file at the top) if there is one."""
    if not staging.exists():
        return None, []
    moved: list[Path] = []
    record = None
    for path in sorted(staging.iterdir()):
        target = results_dir / path.name
        shutil.move(str(path), target)
        moved.append(target)
        if target.suffix == ".json" and record is None:
            with contextlib.suppress(OSError, ValueError):
                record = json.loads(target.read_text())
    shutil.rmtree(staging, ignore_errors=True)
    return record, moved


def _reuse(name: str, file: str, results_dir: Path) -> dict[str, Any]:
    """A scenario's figures from an earlier results file."""
    if file:
        path = Path(file)
    else:
        candidates = sorted(results_dir.glob(f"*-{name}.json")) or sorted(
            harness.RESULTS_DIR.glob(f"*-{name}.json")
        )
        if not candidates:
            return {"status": "failed", "note": f"--reuse {name}: no *-{name}.json in {results_dir}"}
        path = candidates[-1]
    try:
        scenario_record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return {"status": "failed", "note": f"--reuse {name}: {path}: {exc}"}
    entry = {"status": "reused", "results_files": [str(_shown(path))], **_from_record(name, scenario_record)}
    entry["note"] = f"from {path.name}, run {entry.get('started_at', '?')}" + (
        ", --quick" if entry.get("params", {}).get("quick") else ""
    )
    return entry


def _from_record(name: str, record: Mapping[str, Any]) -> dict[str, Any]:
    """What the combined record keeps of a scenario's record."""
    out: dict[str, Any] = {
        "started_at": record.get("started_at"),
        "params": record.get("params"),
        "git_commit": record.get("machine", {}).get("git_commit"),
        "loadavg_at_start": record.get("machine", {}).get("loadavg_at_start"),
        "headline": headline(name, record),
    }
    for key in ("summary", "problems"):
        if key in record:
            out[key] = record[key]
    return out


def _shown(path: Path) -> Path:
    return path.relative_to(harness.REPO) if path.is_relative_to(harness.REPO) else path


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


# --- headline figures ----------------------------------------------------------------------------
#
# A row: figure, unit, meshgate, peer, peer_name, ratio (meshgate / peer), aim, aim_met (None: no
# aim). Numbers in the unit given; None when not measured.


def row(
    figure: str, unit: str, meshgate: float | None, peer: float | None = None, peer_name: str = "",
    aim: str = "", aim_met: bool | None = None, note: str = "",
) -> dict[str, Any]:  # fmt: skip
    ratio = meshgate / peer if meshgate is not None and peer else None
    return {"figure": figure, "unit": unit, "meshgate": meshgate, "peer": peer, "peer_name": peer_name,
            "ratio": ratio, "aim": aim, "aim_met": aim_met, "note": note}  # fmt: skip


def _sync(r: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    med = r["propagation"]["median_of_rounds"]
    p99 = med["slowest_zone_p99"]
    rows.append(
        row("sync: write → applied at every zone, p99", "ms", p99 * 1e3, aim="< 1 s", aim_met=p99 < 1.0)
    )
    rows.append(row("sync: write → applied per zone, p50", "ms", med["per_zone_p50"] * 1e3))
    full = r["full_sync_first_zone"]["median_total_s"]
    rows.append(
        row("sync: new zone's full sync (simulated zone)", "s", full, aim="< 2 s", aim_met=full < 2.0)
    )
    real = r.get("full_sync_real_zone")
    if real:
        marks = real["seconds_from_process_start"]
        took = marks["applied"] - marks["connected"]
        rows.append(row("sync: new zone's full sync (real zone CP, connected → applied)", "s", took, aim="< 2 s",
                        aim_met=took < 2.0, note=f"{real['total_s']:.2f} s from process start"))  # fmt: skip
    per_zone = r.get("memory", {}).get("per_zone_bytes")
    if per_zone is not None:
        rows.append(row("sync: global CP memory per connected zone", "MB", per_zone / 1e6))
    return rows


def _proxies(r: Mapping[str, Any]) -> list[dict[str, Any]]:
    med = r["propagation"]["median_of_rounds"]
    p99 = med["all_proxies_p99"]
    rows = [
        row("proxies: write → applied at every proxy, p99", "ms", p99 * 1e3, aim="< 1 s", aim_met=p99 < 1.0),
        row("proxies: write → applied per proxy, p50", "ms", med["per_proxy_p50"] * 1e3),
    ]
    full = r.get("full_sync_new_proxy", {}).get("median_total_s")
    if full is not None:
        rows.append(row("proxies: new proxy's full sync", "s", full))
    per_proxy = [z["per_proxy_marginal_bytes"] for z in (r.get("zone_cp_memory") or {}).values()
                 if z.get("per_proxy_marginal_bytes") is not None]  # fmt: skip
    if per_proxy:
        worst = max(per_proxy) / 1e3
        rows.append(row("proxies: zone CP memory per connected proxy", "KB", worst, aim="< 100 KB",
                        aim_met=worst < 100, note=f"the larger of {len(per_proxy)} zone CPs"))  # fmt: skip
    return rows


def _peer_pair(r: Mapping[str, Any], peer: str = "haproxy") -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    summary = r["summary"]
    return summary["meshgate"], summary[peer]


def _http(r: Mapping[str, Any]) -> list[dict[str, Any]]:
    m, h = _peer_pair(r)
    return [
        row("http: one hop, requests/s", "req/s", m["median_rps"], h["median_rps"], "HAProxy"),
        row("http: one hop, CPU per request", "µs", m["median_cpu_us_per_request"], h["median_cpu_us_per_request"], "HAProxy",
            aim="≤ 1.3x HAProxy", aim_met=m["median_cpu_us_per_request"] <= 1.3 * h["median_cpu_us_per_request"]),
        row("http: one hop, latency p99", "ms", m["median_p99_s"] * 1e3, h["median_p99_s"] * 1e3, "HAProxy"),
    ]  # fmt: skip


def _l4(r: Mapping[str, Any]) -> list[dict[str, Any]]:
    m, h = _peer_pair(r)
    return [
        row("l4: mTLS relay chain throughput", "Gbit/s", m["median_gbit_per_s"], h["median_gbit_per_s"], "HAProxy",
            aim="≥ 0.9x HAProxy", aim_met=m["median_gbit_per_s"] >= 0.9 * h["median_gbit_per_s"]),
        row("l4: mTLS relay chain CPU per GB", "CPU s", m["median_cpu_s_per_gb"], h["median_cpu_s_per_gb"], "HAProxy"),
    ]  # fmt: skip


def _mesh(r: Mapping[str, Any]) -> list[dict[str, Any]]:
    m, h = _peer_pair(r)
    aim = r["summary"].get("aim_rps_ratio", {})
    return [
        row("mesh: edge → ingress → local proxy, requests/s", "req/s", m["median_rps"], h["median_rps"],
            "HAProxy chain", aim=f"≥ {aim['aim']}x HAProxy" if aim else "", aim_met=aim.get("met")),
        row("mesh: CPU per request, all hops", "µs", m["median_cpu_us_per_request"],
            h["median_cpu_us_per_request"], "HAProxy chain"),
        row("mesh: latency p99", "ms", m["median_p99_s"] * 1e3, h["median_p99_s"] * 1e3, "HAProxy chain"),
    ]  # fmt: skip


def _latency(r: Mapping[str, Any]) -> list[dict[str, Any]]:
    summary = r["summary"]
    aim = summary.get("aim") or {}
    rows = []
    for rate in sorted((k for k in summary if k.isdigit()), key=int):
        added, paths = summary[rate]["added_s"], summary[rate]["paths"]
        is_aim_rate = bool(aim) and str(aim.get("rate")) == rate
        kept = [f"{label} {paths[p]['rounds_reached']} of {paths[p]['rounds_ok']}"
                for p, label in (("meshgate", "meshgate"), ("haproxy", "HAProxy"))
                if paths[p]["rounds_reached"] < paths[p]["rounds_ok"]]  # fmt: skip
        rows.append(
            row(f"latency: added p99 at {int(rate):,} requests/s (mesh path vs direct)", "ms",
                added["meshgate"]["p99"] * 1e3, added["haproxy"]["p99"] * 1e3, "HAProxy chain",
                aim=f"< {aim['limit_s'] * 1e3:g} ms" if is_aim_rate else "",
                aim_met=aim.get("met") if is_aim_rate else None,
                note=f"rate kept in {', '.join(kept)} runs: the rest is queueing" if kept else "")
        )  # fmt: skip
    return rows


#: scenario -> headline rows from its record, for records that carry no ``headline`` of their own
HEADLINES: Final[dict[str, Callable[[Mapping[str, Any]], list[dict[str, Any]]]]] = {
    "sync": _sync,
    "proxies": _proxies,
    "http": _http,
    "l4": _l4,
    "mesh": _mesh,
    "latency": _latency,
}


def headline(name: str, record: Mapping[str, Any]) -> list[dict[str, Any]]:
    if isinstance(record.get("headline"), list):
        return [dict(r) for r in record["headline"]]
    extract = HEADLINES.get(name)
    if extract is None:
        return []
    try:
        return extract(record)
    except (KeyError, TypeError, ValueError) as exc:  # a record of another shape: say so, not crash
        return [row(f"{name}: figures not found in its record ({type(exc).__name__}: {exc})", "", None)]


# --- the combined table --------------------------------------------------------------------------


def _value(value: float | None, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if unit in ("req/s", "requests"):
        return f"{value:,.0f}" + (" req/s" if unit == "req/s" else "")
    if unit in ("µs", "MB", "KB"):
        return f"{value:.1f} {unit}"
    if unit == "ms":
        if value >= 1000:
            return f"{value / 1000:.2f} s"
        return f"{value:.1f} ms" if value >= 10 else f"{value:.2f} ms"
    if unit in ("s", "Gbit/s", "CPU s"):
        return f"{value:.2f} {unit}"
    return f"{value:g} {unit}".strip()


def table(record: Mapping[str, Any]) -> str:
    rows = []
    for name, entry in record["scenarios"].items():
        for r in entry.get("headline", []):
            ratio = r.get("ratio")
            rows.append([
                r["figure"],
                _value(r.get("meshgate"), r.get("unit", "")) + (f" ({r['note']})" if r.get("note") else ""),
                f"{_value(r['peer'], r.get('unit', ''))} ({r['peer_name']})" if r.get("peer") is not None else "",
                f"{ratio:.2f}" if isinstance(ratio, int | float) and math.isfinite(ratio) else "",
                r.get("aim") or "",
                "" if r.get("aim_met") is None else ("met" if r["aim_met"] else "**not met**"),
            ])  # fmt: skip
        if not entry.get("headline"):
            rows.append([f"{name}: {entry['status']}" + (f" ({entry['note']})" if entry.get("note") else ""),
                         "", "", "", "", ""])  # fmt: skip
    return harness.markdown_table(["figure", "meshgate", "peer", "meshgate / peer", "aim", "met"], rows)


def render(record: Mapping[str, Any]) -> str:
    m, p = record["machine"], record["params"]
    head = (
        f"## bench suite{' (--quick)' if p['quick'] else ''}: {record['started_at']}\n\n"
        f"{m['cpus']} CPUs, {((m.get('memory_total_bytes') or 0) / 2**30):.1f} GiB, load average at start "
        f"{m['loadavg_at_start']}, Python {m['python']}, kernel {m['kernel']}, commit {m['git_commit'][:10]}"
        f"{' (dirty)' if m['git_dirty'] else ''}\n\n"
    )
    status_lines = []
    for name, entry in record["scenarios"].items():
        when = (
            f", run {entry['started_at']}" if entry.get("started_at") and entry["status"] != "reused" else ""
        )
        took = f", {entry['seconds']:.0f} s" if "seconds" in entry else ""
        quick = " --quick" if (entry.get("params") or {}).get("quick") and entry["status"] != "reused" else ""
        note = f": {entry['note']}" if entry.get("note") else ""
        load = (
            f", load average at its start {entry['loadavg_at_start']}"
            if entry.get("loadavg_at_start")
            else ""
        )
        status_lines.append(f"- `{name}`{quick}: {entry['status']}{note}{when}{took}{load}")
    return (
        head
        + table(record)
        + "\n\nA ratio above 1: meshgate's figure is the larger (more requests/s, resp. more CPU, "
        "latency or memory). Each scenario's own results (every round, how each figure is "
        "measured) are in the files listed in the JSON record.\n\n" + "\n".join(status_lines) + "\n"
    )
