"""The mesh path: requests per second, latency and CPU per request of the whole data path a
public request takes, meshgate against HAProxy doing the same TLS hops.

    wrk (HTTPS, C keep-alive connections) -> edge (terminates TLS) -> zone ingress (SNI
    passthrough) -> local proxy (terminates mTLS) -> nginx (return 200, 100-byte body)

The meshgate path is made of real ``meshgate edge run`` and ``meshgate proxy run`` processes
configured through a real global CP and zone CP (``bench.mesh_start``); the HAProxy chain is three
HAProxy 2.6 processes (``bench.mesh_setup``). Rounds alternate between the chains (meshgate,
HAProxy, meshgate, ...), each one wrk run after a short warm-up, with the CPU time of each chain's
three proxy processes read from /proc before and after.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from bench import mesh_perf
from bench.harness import (
    REPO,
    RESULTS_DIR,
    Owned,
    Profiler,
    cpu_seconds,
    machine_info,
    median,
    peak_rss_bytes,
    rss_bytes,
    say,
    scenario_run,
    summarise_stacks,
    utc_stamp,
    write_results,
)
from bench.http_setup import WRK, missing_binaries, parse_wrk_script, truncate, versions, wrk_script
from bench.l4_chain import CpuTimes, irq_time_accounting
from bench.l4_setup import Proc
from bench.mesh_report import render
from bench.mesh_setup import (
    HAPROXY_HOPS,
    count_haproxy_log,
    http_counts,
    listener_accepted,
    make_tls,
)
from bench.mesh_start import MESH_HOPS, Bed, Pinning, start
from meshgate.demo.resources import HOSTNAME

SCENARIO: Final = "mesh"
CHAINS: Final = ("meshgate", "haproxy")
#: wrk runs before the rounds, per chain (not measured): first connections, pools, caches
WARMUP_SECONDS: Final = 2
#: a wrk run before each measured round (not measured), so that each starts from the same state
ROUND_WARMUP_SECONDS: Final = 1
#: after wrk exits: its connections are closed and counted
SETTLE_SECONDS: Final = 0.6
PROFILE_RATE: Final = 200
PROFILE_TOP: Final = 25
#: the issue's aim: the mesh path's requests/s at least this share of the HAProxy chain's
AIM_RPS_RATIO: Final = 0.8


@dataclass(frozen=True)
class Params:
    seconds: int = 10  # per wrk run
    rounds: int = 5  # per chain
    connections: int = 50  # wrk -c
    pin: bool = True
    profile: bool = False
    keep: bool = False
    quick: bool = False
    results_dir: str | None = None  # default: bench/results

    @classmethod
    def quick_defaults(cls) -> dict[str, int]:
        return {"seconds": 3, "rounds": 1}


def run(params: Params) -> dict[str, Any]:
    """The whole scenario; returns the record written to the results directory."""
    stamp = utc_stamp()
    pinning = Pinning.choose(params.pin)
    results_dir = Path(params.results_dir) if params.results_dir else RESULTS_DIR
    record: dict[str, Any] = {
        "scenario": SCENARIO,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "params": asdict(params),
        "setup": {
            **versions(),
            "haproxy_threads": 1,
            "meshgate_event_loop": "uvloop, one process per hop",
            "irq_time_accounting": irq_time_accounting(),
            "pinning": pinning.describe("wrk"),
            "pinned_cpus": pinning.as_record(),
            "hostname": HOSTNAME,
            "warmup_s": {"before_rounds": WARMUP_SECONDS, "before_each_round": ROUND_WARMUP_SECONDS},
            "aim": f"meshgate requests/s at least {AIM_RPS_RATIO}x HAProxy's",
        },
    }
    missing = missing_binaries()
    if missing:
        raise RuntimeError(f"the mesh benchmark needs {', '.join(missing)} (apt: nginx haproxy wrk)")
    say(f"machine: {record['machine']['cpus']} CPUs, load {record['machine']['loadavg_at_start']}")
    say(f"pinning: {record['setup']['pinning']}")
    with scenario_run(SCENARIO, pinning, keep=params.keep) as (root, owned):
        _scenario(params, pinning, root, owned, record, results_dir / f"{stamp}-{SCENARIO}-profile")
    record["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    record["problems"] = problems(record)
    markdown = render(record)
    json_path, md_path = write_results(SCENARIO, record, markdown, stamp, directory=results_dir)
    print(markdown)
    shown = json_path.relative_to(Path.cwd()) if json_path.is_relative_to(Path.cwd()) else json_path
    print(f"\nresults: {shown}\n         {md_path.name}")
    return record


def process_facts(bed: Bed) -> dict[str, Any]:
    procs = bed.all_procs()
    return {
        "pids": {name: proc.pid for name, proc in procs.items()},
        "cpus_allowed": {name: sorted(os.sched_getaffinity(proc.pid)) for name, proc in procs.items()},
    }


def _scenario(
    params: Params, pinning: Pinning, root: Path, owned: Owned, record: dict[str, Any], profile_dir: Path
) -> None:
    tls = make_tls(root / "tls")
    bed = start(root, owned, pinning, tls)
    record["setup"].update(process_facts(bed))
    record["setup"]["ports"] = {name: bed.entry_port(name) for name in (*CHAINS, "direct")}
    script = wrk_script(root)
    time.sleep(1.0)
    record["rss"] = {name: {"idle_bytes": rss_bytes(p.pid)} for name, p in _proxies(bed).items()}

    warmup = 1 if params.quick else WARMUP_SECONDS
    say(f"warming up each chain ({warmup} s of wrk, not measured)")
    record["warmup"] = {}
    for name in CHAINS:
        result = wrk_round(bed, name, warmup, params.connections, pinning, root, script, f"warmup-{name}")
        record["warmup"][name] = brief(result)
        if result.get("error"):
            raise RuntimeError(f"wrk does not get through the {name} chain: {result['error']}")
        if result["requests"] == 0 or result["non_2xx_3xx"] == result["requests"]:
            raise RuntimeError(f"no successful request through the {name} chain during the warm-up")
        idle = [hop for hop, used in result["cpu_s"].items() if used <= 0]
        if idle:
            raise RuntimeError(f"the {name} chain carried the warm-up without using hop(s) {idle}")
        say(f"  {name}: {result['rps']:.0f} requests/s, every hop busy")

    rounds: list[dict[str, Any]] = []
    record["rounds"] = rounds
    for i in range(params.rounds):
        for name in CHAINS:
            warm = wrk_round(
                bed,
                name,
                ROUND_WARMUP_SECONDS,
                params.connections,
                pinning,
                root,
                script,
                f"{i + 1}-{name}-w",
            )
            result = wrk_round(
                bed, name, params.seconds, params.connections, pinning, root, script, f"{i + 1}-{name}"
            )
            result["round"] = i + 1
            result["warmup"] = brief(warm)
            rounds.append(result)
            if result.get("error"):
                say(f"round {i + 1} {name}: FAILED: {result['error']}")
            else:
                hops = ", ".join(f"{h} {v:.0f}" for h, v in result["cpu_us_per_request_by_hop"].items())
                say(
                    f"round {i + 1} {name}: {result['rps']:.0f} requests/s, p50 {result['p50_s'] * 1e3:.2f} ms, "
                    f"p99 {result['p99_s'] * 1e3:.2f} ms, p99.9 {result['p999_s'] * 1e3:.2f} ms, "
                    f"{result['cpu_us_per_request']:.0f} CPU us/request ({hops}), "
                    f"errors {result['socket_errors_total']}, non-2xx/3xx {result['non_2xx_3xx']}"
                )

    for name, proc in _proxies(bed).items():
        record["rss"][name]["after_rounds_bytes"] = rss_bytes(proc.pid)
        record["rss"][name]["peak_bytes"] = peak_rss_bytes(proc.pid)
    record["summary"] = summarise(rounds)
    if params.profile:
        record["profile"] = profile(bed, params, pinning, root, script, profile_dir)


def _proxies(bed: Bed) -> dict[str, Any]:
    return {f"{name}-{hop}": proc for name in CHAINS for hop, proc in bed.chain(name).items()}


# --- one wrk run through one chain ------------------------------------------------------------------


def _counters(bed: Bed, name: str) -> dict[str, dict[str, float]]:
    """What the chain's processes counted so far: meshgate's HTTP counters (edge, local) and the
    ingress's accepted connections; HAProxy counts through its logs instead (emptied per round)."""
    if name != "meshgate":
        return {}
    out: dict[str, dict[str, float]] = {}
    for hop in MESH_HOPS:
        metrics = bed.metrics(hop)
        out[hop] = http_counts(metrics) | {"connections_accepted": listener_accepted(metrics)}
    return out


def _diff(
    after: Mapping[str, Mapping[str, float]], before: Mapping[str, Mapping[str, float]]
) -> dict[str, Any]:
    return {
        hop: {
            k: int(v - before.get(hop, {}).get(k, 0))
            for k, v in values.items()
            if v - before.get(hop, {}).get(k, 0)
        }
        for hop, values in after.items()
    }


def wrk_argv(port: int, seconds: int, connections: int, script: Path) -> list[str]:
    return [WRK, "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script), "-H", f"Host: {HOSTNAME}",
            f"https://127.0.0.1:{port}/"]  # fmt: skip


def wrk_round(
    bed: Bed,
    name: str,
    seconds: int,
    connections: int,
    pinning: Pinning,
    root: Path,
    script: Path,
    label: str,
) -> dict[str, Any]:
    """One wrk run through a chain; each hop's CPU time from /proc before and after, the CPUs'
    from /proc/stat, and what the chain's processes counted during the run."""
    chain = bed.chain(name)
    result: dict[str, Any] = {"chain": name, "seconds": seconds, "connections": connections}
    for log in bed.haproxy_logs.values():
        truncate(log)
    counters0 = _counters(bed, name)
    before = {hop: cpu_seconds(proc.pid) for hop, proc in chain.items()}
    nginx0 = cpu_seconds(bed.nginx.pid)
    machine0, proxy_cpus0 = CpuTimes.read(), CpuTimes.read(pinning.proxies)
    out = root / f"wrk-{label}.txt"
    started = time.monotonic()
    wrk = Proc(
        f"wrk-{label}", wrk_argv(bed.entry_port(name), seconds, connections, script), out, cpus=pinning.load
    )
    try:
        try:
            code = wrk.popen.wait(seconds + 30)
            if code != 0:
                result["error"] = f"wrk exited with status {code}: {wrk.tail(5)}"
        except subprocess.TimeoutExpired:
            result["error"] = f"wrk did not finish within {seconds + 30} s"
        wall = time.monotonic() - started
        time.sleep(SETTLE_SECONDS)
    finally:  # on errors and Ctrl-C too: the load never outlives its round
        wrk.kill()
    bed.check_alive()
    used = {hop: cpu_seconds(proc.pid) - before[hop] for hop, proc in chain.items()}
    nginx_used = cpu_seconds(bed.nginx.pid) - nginx0
    machine, proxy_cpus = CpuTimes.read() - machine0, CpuTimes.read(pinning.proxies) - proxy_cpus0
    result["counted"] = _diff(_counters(bed, name), counters0)
    if name == "haproxy":
        result["logged"] = {hop: count_haproxy_log(bed.haproxy_logs[hop]) for hop in HAPROXY_HOPS}
    result["wall_s"] = round(wall, 3)
    result["cpu_s"] = {hop: round(v, 3) for hop, v in used.items()}
    result["cpu_total_s"] = round(sum(used.values()), 3)
    result["nginx_cpu_s"] = round(nginx_used, 3)
    result["machine_busy_s"] = round(machine.busy, 3)
    if pinning.proxies is not None:
        result["proxy_cpus"] = {
            "cpus": sorted(pinning.proxies),
            "other_processes_s": round(proxy_cpus.busy - result["cpu_total_s"], 3),
            "interrupts_s": round(proxy_cpus.interrupts, 3),
            "idle_s": round(proxy_cpus.idle, 3),
            "steal_s": round(proxy_cpus.steal, 3),
        }
    result["loadavg_after"] = round(os.getloadavg()[0], 2)
    if "error" in result:
        return result
    try:
        result.update(parse_wrk_script(out.read_text(errors="replace")))
    except (OSError, ValueError) as exc:
        result["error"] = f"cannot read wrk's output: {exc}"
        return result
    requests = result["requests"]
    if requests == 0:
        result["error"] = "wrk completed no request"
        return result
    result["cpu_us_per_request"] = result["cpu_total_s"] / requests * 1e6
    result["cpu_us_per_request_by_hop"] = {hop: v / requests * 1e6 for hop, v in used.items()}
    result["nginx_cpu_us_per_request"] = nginx_used / requests * 1e6
    result["proxies_busy"] = (
        result["cpu_total_s"] / result["duration_s"] if result["duration_s"] else float("nan")
    )
    return result


def brief(result: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("rps", "requests", "p50_s", "p99_s", "p999_s", "cpu_total_s", "cpu_us_per_request", "non_2xx_3xx",
            "socket_errors_total", "error")  # fmt: skip
    return {key: result[key] for key in keys if key in result}


# --- figures -------------------------------------------------------------------------------------


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def summarise(rounds: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per chain: medians over its good rounds, totals; then meshgate / HAProxy."""
    summary: dict[str, Any] = {}
    for name in CHAINS:
        good = [r for r in rounds if r["chain"] == name and not r.get("error")]
        hops = MESH_HOPS if name == "meshgate" else HAPROXY_HOPS

        def med(key: str, rows: Sequence[Mapping[str, Any]] = good) -> float:
            return median([r[key] for r in rows])

        summary[name] = {
            "rounds_ok": len(good),
            "rounds_failed": sum(1 for r in rounds if r["chain"] == name and r.get("error")),
            "median_rps": med("rps"),
            "min_rps": min((r["rps"] for r in good), default=float("nan")),
            "max_rps": max((r["rps"] for r in good), default=float("nan")),
            **{f"median_{q}_s": med(f"{q}_s") for q in ("p50", "p90", "p99", "p999")},
            "median_cpu_us_per_request": med("cpu_us_per_request"),
            "median_cpu_us_per_request_by_hop": {
                hop: median([r["cpu_us_per_request_by_hop"][hop] for r in good]) for hop in hops
            },
            "median_proxies_busy": med("proxies_busy"),
            "median_nginx_cpu_us_per_request": med("nginx_cpu_us_per_request"),
            "requests_total": sum(r["requests"] for r in good),
            "non_2xx_3xx_total": sum(r["non_2xx_3xx"] for r in good),
            "socket_errors_total": sum(r["socket_errors_total"] for r in good),
            "median_proxy_cpus": {
                key: median([r["proxy_cpus"][key] for r in good if "proxy_cpus" in r])
                for key in ("idle_s", "interrupts_s", "other_processes_s", "steal_s")
            },
        }
    m, h = summary["meshgate"], summary["haproxy"]
    ratios = {
        "rps": _ratio(m["median_rps"], h["median_rps"]),
        "cpu_us_per_request": _ratio(m["median_cpu_us_per_request"], h["median_cpu_us_per_request"]),
        **{q: _ratio(m[f"median_{q}_s"], h[f"median_{q}_s"]) for q in ("p50", "p99", "p999")},
        "cpu_us_per_request_by_hop": {
            hop: _ratio(
                m["median_cpu_us_per_request_by_hop"][hop], h["median_cpu_us_per_request_by_hop"][hop]
            )
            for hop in MESH_HOPS
        },
    }
    summary["meshgate_over_haproxy"] = ratios
    rps_ratio = _ratio(m["median_rps"], h["median_rps"])
    summary["aim_rps_ratio"] = {"aim": AIM_RPS_RATIO, "met": bool(rps_ratio >= AIM_RPS_RATIO)}
    return summary


def problems(record: Mapping[str, Any]) -> list[str]:
    """Failed rounds, responses other than 2xx/3xx, socket errors, and what the chains counted
    as errors. Empty: a clean run."""
    found: list[str] = []
    for r in record.get("rounds", []):
        where = f"round {r['round']} {r['chain']}"
        if r.get("error"):
            found.append(f"{where}: failed: {r['error']}")
            continue
        if r["non_2xx_3xx"]:
            found.append(f"{where}: {r['non_2xx_3xx']} responses with a status of 400 or more (wrk)")
        if r["socket_errors_total"]:
            found.append(f"{where}: socket errors {r['socket_errors']} (wrk)")
        for hop, counted in r.get("counted", {}).items():
            bad = {
                k: v
                for k, v in counted.items()
                if k not in ("requests_2xx", "requests_none", "connections_accepted")
            }
            if bad:
                found.append(f"{where}: meshgate {hop} counted {bad}")
            if counted.get("requests_none", 0) > r["connections"]:  # more than wrk's stop can cut
                found.append(
                    f"{where}: meshgate {hop} counted {counted['requests_none']} requests without a status"
                )
        for hop, logged in r.get("logged", {}).items():
            if logged["errors"]:
                found.append(f"{where}: HAProxy {hop} logged {logged['errors']}")
            if logged["cut_by_client"] > 2 * r["connections"]:
                found.append(
                    f"{where}: HAProxy {hop} logged {logged['cut_by_client']} requests or sessions cut"
                )
        warm = r.get("warmup", {})
        if warm.get("error") or warm.get("non_2xx_3xx") or warm.get("socket_errors_total"):
            found.append(f"{where}: its warm-up: {warm}")
    return found


# --- the profile ---------------------------------------------------------------------------------


def profile(
    bed: Bed, params: Params, pinning: Pinning, root: Path, script: Path, out: Path
) -> dict[str, Any]:
    """One extra meshgate round with py-spy recording each of the three processes (sampling slows
    them: the round's figures are not results); collapsed stacks summarised by function."""
    if not Profiler.available():
        say("--profile: py-spy is not installed (pip install py-spy); skipping the profile")
        return {"skipped": "py-spy not found"}
    out.mkdir(parents=True, exist_ok=True)
    say(f"profile: one more meshgate round of {params.seconds} s under py-spy ({PROFILE_RATE} Hz, each hop)")
    profilers = {
        hop: Profiler(proc.pid, out / f"meshgate-{hop}.collapsed.txt", rate=PROFILE_RATE).start()
        for hop, proc in bed.mesh.items()
    }
    try:
        result = wrk_round(
            bed, "meshgate", params.seconds, params.connections, pinning, root, script, "profile"
        )
    finally:
        for profiler in profilers.values():
            profiler.stop()
    shown = str(out.relative_to(REPO)) if out.is_relative_to(REPO) else str(out)
    found = {
        "dir": shown,
        "rate_hz": PROFILE_RATE,
        "round_under_profiler": brief(result)
        | {"cpu_us_per_request_by_hop": result.get("cpu_us_per_request_by_hop")},
        "hops": {hop: summarise_stacks(p.out, PROFILE_TOP, _PLUMBING) for hop, p in profilers.items()},
    }
    if mesh_perf.available():
        found["perf"] = {name: _perf_round(bed, name, params, pinning, root, script) for name in CHAINS}
    else:
        say("--profile: perf is not installed (apt: linux-perf); no CPU split by library")
    return found


def _perf_round(
    bed: Bed, name: str, params: Params, pinning: Pinning, root: Path, script: Path
) -> dict[str, Any]:
    """One more round of a chain with ``perf record -e cpu-clock`` on each hop: what the CPU ran."""
    say(f"profile: one more {name} round of {params.seconds} s under perf (cpu-clock, each hop)")
    seconds = max(params.seconds - 1, 1)
    data = {hop: root / f"perf-{name}-{hop}.data" for hop in bed.chain(name)}
    recorders = {hop: mesh_perf.record(proc.pid, data[hop], seconds) for hop, proc in bed.chain(name).items()}
    try:
        result = wrk_round(
            bed, name, params.seconds, params.connections, pinning, root, script, f"perf-{name}"
        )
    finally:
        for recorder in recorders.values():
            try:
                recorder.wait(seconds + 30)
            except subprocess.TimeoutExpired:
                recorder.kill()
                recorder.wait()
    return {
        "round_under_profiler": brief(result)
        | {"cpu_us_per_request_by_hop": result.get("cpu_us_per_request_by_hop", {})},
        "hops": {hop: mesh_perf.summarise(path) for hop, path in data.items()},
    }


#: the processes' entry points (``main`` runs the event loop): on every stack, no information
_PLUMBING: Final = ("edge/process.py", "zones/process.py")
