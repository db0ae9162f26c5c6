"""The HTTP data path: one HTTP/1.1 proxy hop's request rate, latency and CPU per request,
meshgate's HTTP engine against HAProxy and nginx doing the same hop.

    wrk (-t1, C keep-alive connections) -> proxy -> nginx (return 200, ~100-byte body)

The meshgate hop is ``bench.http_node``: the local proxy's inbound request path (``Site`` ->
``HttpUpstreams`` -> one cluster) without TLS termination, metrics and access log on (every
request logged). HAProxy 2.6 does the same in HTTP mode with ``nbthread 1``, its log on, and
nginx 1.22 as a reverse proxy in one process, its access log on. All keep their connections to
nginx alive and reuse them. Rounds alternate between the proxies (meshgate, HAProxy, nginx,
meshgate, ...), each one wrk run after a short warm-up, with the proxy's CPU time read from
/proc before and after.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import resource
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from bench.harness import (
    REPO,
    RESULTS_DIR,
    CpuSplit,
    Owned,
    Profiler,
    cpu_list,
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
from bench.http_report import render
from bench.http_setup import (
    BODY,
    WRK,
    LogCounts,
    Ports,
    count_haproxy_log,
    count_meshgate_log,
    count_nginx_log,
    haproxy_argv,
    haproxy_config,
    haproxy_server_stats,
    meshgate_argv,
    meshgate_spec,
    missing_binaries,
    nginx_argv,
    nginx_config,
    nginx_proxy_argv,
    nginx_proxy_config,
    nginx_proxy_errors,
    parse_wrk,
    truncate,
    versions,
    wrk_script,
)
from bench.l4_chain import CpuTimes, irq_time_accounting
from bench.l4_setup import LOCALHOST, Proc, free_ports, listening, wait_until

SCENARIO: Final = "http"
#: the proxies in the order each round runs them; "nginx" in a record is the workload
PROXIES: Final = ("meshgate", "haproxy", "nginx_proxy")
#: meshgate's peers: the summary's ``meshgate_over_<peer>`` ratios
PEERS: Final = ("haproxy", "nginx_proxy")
START_TIMEOUT: Final = 30.0
#: wrk runs before the rounds, per proxy (not measured): the first connections, the pools, caches
WARMUP_SECONDS: Final = 2
#: a wrk run before each measured round (not measured), so that each starts from the same state
ROUND_WARMUP_SECONDS: Final = 1
#: after wrk exits: meshgate's access log is flushed on its 0.25 s tick, nginx's 0.25 s after its
#: first pending line
SETTLE_SECONDS: Final = 0.6
PROFILE_RATE: Final = 200
PROFILE_TOP: Final = 25


@dataclass(frozen=True)
class Params:
    seconds: int = 10  # per wrk run
    rounds: int = 5  # per proxy
    connections: int = 50  # wrk -c
    pin: bool = True
    profile: bool = False
    keep: bool = False
    quick: bool = False
    results_dir: str | None = None  # default: bench/results

    @classmethod
    def quick_defaults(cls) -> dict[str, int]:
        return {"seconds": 3, "rounds": 1}


@dataclass(frozen=True)
class Pinning(CpuSplit):
    """Which CPUs the load (wrk, nginx and the bench) and the proxies run on; None: anywhere."""

    def describe(self) -> str:
        if self.load is None or self.proxies is None:
            return "no pinning: every process runs wherever the scheduler puts it"
        return (
            f"wrk and nginx (and the bench) on CPU {cpu_list(self.load)}; the proxies on CPU "
            f"{cpu_list(self.proxies)} (one is loaded at a time, the others idle)"
        )


@dataclass
class Hop:
    """One proxy under test: its process, its port, where its log goes and how to count it."""

    name: str
    port: int
    proc: Proc
    log: Path
    counter: Callable[[Path], LogCounts]

    def count_log(self) -> LogCounts:
        return self.counter(self.log)


def _per_request_log(log: Path) -> bool:
    return log.name.endswith("access.log") or log.name == "haproxy.log"  # one line per request


# --- the run -------------------------------------------------------------------------------------


def run(params: Params) -> dict[str, Any]:
    """The whole scenario; returns the record that was written to the results directory."""
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
            "nginx_proxy": "one process (master_process off), upstream keepalive pool of --connections",
            "meshgate_event_loop": "uvloop, one process",
            "irq_time_accounting": irq_time_accounting(),
            "pinning": pinning.describe(),
            "pinned_cpus": pinning.as_record(),
            "body_bytes": len(BODY) + 1,
            "warmup_s": {"before_rounds": WARMUP_SECONDS, "before_each_round": ROUND_WARMUP_SECONDS},
        },
    }
    missing = missing_binaries()
    if missing:
        raise RuntimeError(f"the http benchmark needs {', '.join(missing)} (apt: nginx haproxy wrk)")
    say(f"machine: {record['machine']['cpus']} CPUs, load {record['machine']['loadavg_at_start']}")
    say(f"pinning: {pinning.describe()}")
    with scenario_run(SCENARIO, pinning, keep=params.keep, skip_log=_per_request_log) as (root, owned):
        _scenario(params, pinning, root, owned, record, results_dir / f"{stamp}-{SCENARIO}-profile")
        record["meshgate_stats"] = _read_json(root / "meshgate.stats.json")
    record["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    record["problems"] = problems(record)
    markdown = render(record)
    json_path, md_path = write_results(SCENARIO, record, markdown, stamp, directory=results_dir)
    print(markdown)
    shown = json_path.relative_to(Path.cwd()) if json_path.is_relative_to(Path.cwd()) else json_path
    print(f"\nresults: {shown}\n         {md_path.name}")
    return record


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _scenario(
    params: Params, pinning: Pinning, root: Path, owned: Owned, record: dict[str, Any], profile_dir: Path
) -> None:
    nginx_port, meshgate_port, haproxy_port, nginx_proxy_port = free_ports(4)
    ports = Ports(
        nginx=nginx_port, meshgate=meshgate_port, haproxy=haproxy_port, nginx_proxy=nginx_proxy_port
    )
    record["setup"]["ports"] = asdict(ports)

    say("starting nginx, the meshgate node, HAProxy and the nginx proxy")
    nginx_argv_ = nginx_argv(nginx_config(root, ports.nginx), root)
    nginx = owned.add(Proc("nginx", nginx_argv_, root / "nginx.log", cpus=pinning.load))
    wait_until(lambda: listening(ports.nginx), timeout=START_TIMEOUT, what="nginx to listen")
    spec = meshgate_spec(root, ports)
    meshgate = owned.add(Proc("meshgate", meshgate_argv(spec), root / "meshgate.log", cpus=pinning.proxies))
    haproxy_argv_ = haproxy_argv(haproxy_config(root, ports))
    haproxy = owned.add(Proc("haproxy", haproxy_argv_, root / "haproxy.log", cpus=pinning.proxies))
    nginx_proxy_argv_ = nginx_proxy_argv(nginx_proxy_config(root, ports, params.connections), root)
    nginx_proxy = owned.add(
        Proc("nginx_proxy", nginx_proxy_argv_, root / "nginx-proxy.log", cpus=pinning.proxies)
    )
    hops = {
        "meshgate": Hop(
            "meshgate", ports.meshgate, meshgate, root / "meshgate-access.log", count_meshgate_log
        ),
        "haproxy": Hop("haproxy", ports.haproxy, haproxy, root / "haproxy.log", count_haproxy_log),
        "nginx_proxy": Hop(
            "nginx_proxy", ports.nginx_proxy, nginx_proxy, root / "nginx-proxy-access.log", count_nginx_log
        ),
    }
    ready = Path(json.loads(spec.read_text())["ready_file"])
    wait_until(ready.exists, timeout=START_TIMEOUT, what="the meshgate node to listen")
    wait_until(lambda: listening(ports.haproxy), timeout=START_TIMEOUT, what="HAProxy to listen")
    wait_until(lambda: listening(ports.nginx_proxy), timeout=START_TIMEOUT, what="the nginx proxy to listen")
    for proc in (nginx, *(hop.proc for hop in hops.values())):
        if not proc.alive():
            raise RuntimeError(f"{proc!r} exited at start:\n{proc.tail()}")
    procs = {"nginx": nginx, **{name: hop.proc for name, hop in hops.items()}}
    record["setup"]["pids"] = {name: proc.pid for name, proc in procs.items()}
    record["setup"]["cpus_allowed"] = {name: sorted(os.sched_getaffinity(p.pid)) for name, p in procs.items()}

    time.sleep(1.0)
    record["rss"] = {name: {"idle_bytes": rss_bytes(proc.pid)} for name, proc in procs.items()}

    say("checking one request through each proxy")
    record["check"] = {name: _check(hop) for name, hop in hops.items()}

    warmup = 1 if params.quick else WARMUP_SECONDS
    say(f"warming up each proxy ({warmup} s of wrk, not measured)")
    record["warmup"] = {}
    for name, hop in hops.items():
        result = _wrk_round(hop, nginx, warmup, params.connections, pinning, root, f"warmup-{name}")
        record["warmup"][name] = result
        if result.get("error"):
            raise RuntimeError(f"wrk does not get through {name}: {result['error']}")
        if result["requests"] == 0 or result["non_2xx_3xx"] == result["requests"]:
            raise RuntimeError(f"no successful request through {name} during the warm-up")
        say(f"  {name}: {result['rps']:.0f} requests/s")

    rounds: list[dict[str, Any]] = []
    record["rounds"] = rounds
    for i in range(params.rounds):
        for name in PROXIES:
            hop = hops[name]
            warm = _wrk_round(
                hop, nginx, ROUND_WARMUP_SECONDS, params.connections, pinning, root, f"{i + 1}-{name}-warmup"
            )
            result = _wrk_round(
                hop, nginx, params.seconds, params.connections, pinning, root, f"{i + 1}-{name}"
            )
            result["round"] = i + 1
            result["warmup"] = _brief(warm)
            rounds.append(result)
            if result.get("error"):
                say(f"round {i + 1} {name}: FAILED: {result['error']}")
            else:
                say(
                    f"round {i + 1} {name}: {result['rps']:.0f} requests/s, p50 {result['p50_s'] * 1e3:.2f} ms, "
                    f"p99 {result['p99_s'] * 1e3:.2f} ms, {result['cpu_us_per_request']:.1f} CPU us/request, "
                    f"errors {result['socket_errors_total']}, non-2xx/3xx {result['non_2xx_3xx']}"
                )

    for name, proc in procs.items():
        entry = record["rss"][name]
        entry["after_rounds_bytes"] = rss_bytes(proc.pid)
        entry["peak_bytes"] = peak_rss_bytes(proc.pid)
    record["setup"]["threads_after_rounds"] = {name: _threads(proc.pid) for name, proc in procs.items()}
    record["summary"] = summarise(rounds)

    if params.profile:
        record["profile"] = _profile(hops["meshgate"], nginx, params, pinning, root, profile_dir)

    record["haproxy_server"] = haproxy_server_stats(root)
    for hop in hops.values():  # stopped now so that meshgate's stats file is written
        if hop.proc.stop(10) is None:
            say(f"{hop.name} did not exit within 10 s of SIGTERM")
    record["nginx_proxy_error_log"] = nginx_proxy_errors(root)[-20:]


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def _check(hop: Hop) -> dict[str, Any]:
    """One request through the proxy: it must come back 200 with nginx's body."""
    conn = http.client.HTTPConnection(LOCALHOST, hop.port, timeout=10)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        body = response.read().decode(errors="replace")
        headers = {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()
    if response.status != 200 or body != BODY + "\n":
        raise RuntimeError(f"{hop.name} answered {response.status} {body[:200]!r}")
    return {"status": response.status, "headers": sorted(headers)}


# --- one wrk run through one proxy ----------------------------------------------------------------


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _start_wrk(hop: Hop, seconds: int, connections: int, pinning: Pinning, out: Path) -> Proc:
    script = wrk_script(out.parent)  # p99.9 (wrk's own report stops at p99)
    argv = [WRK, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script),
            f"http://{LOCALHOST}:{hop.port}/"]  # fmt: skip
    return Proc(f"wrk-{hop.name}", argv, out, cpus=pinning.load)


def _wrk_round(
    hop: Hop, nginx: Proc, seconds: int, connections: int, pinning: Pinning, root: Path, label: str
) -> dict[str, Any]:
    """One wrk run against the proxy; the proxy's and nginx's CPU time from /proc before and
    after, the CPUs' time from /proc/stat, and what the proxy logged during the run."""
    result: dict[str, Any] = {"proxy": hop.name, "seconds": seconds, "connections": connections}
    truncate(hop.log)
    proxy0, nginx0 = cpu_seconds(hop.proc.pid), cpu_seconds(nginx.pid)
    machine0, proxy_cpus0 = CpuTimes.read(), CpuTimes.read(pinning.proxies)
    load_cpus0 = CpuTimes.read(pinning.load) if pinning.load is not None else None
    children0, self0 = _children_cpu_seconds(), _self_cpu_seconds()
    out = root / f"wrk-{label}.txt"
    started = time.monotonic()
    wrk = _start_wrk(hop, seconds, connections, pinning, out)
    try:
        try:
            code = wrk.popen.wait(seconds + 30)
            if code != 0:
                result["error"] = f"wrk exited with status {code}: {wrk.tail(5)}"
        except subprocess.TimeoutExpired:
            result["error"] = f"wrk did not finish within {seconds + 30} s"
        wall = time.monotonic() - started
        time.sleep(SETTLE_SECONDS)  # the closes are handled, meshgate's log is flushed
    finally:  # on errors and Ctrl-C too: the load never outlives its round
        wrk.kill()
    for proc in (hop.proc, nginx):
        if not proc.alive():
            raise RuntimeError(f"{proc!r} exited during the run:\n{proc.tail()}")
    used = cpu_seconds(hop.proc.pid) - proxy0
    nginx_used = cpu_seconds(nginx.pid) - nginx0
    machine, proxy_cpus = CpuTimes.read() - machine0, CpuTimes.read(pinning.proxies) - proxy_cpus0
    wrk_used = _children_cpu_seconds() - children0
    bench_used = _self_cpu_seconds() - self0
    logged = hop.count_log()
    truncate(hop.log)
    result["wall_s"] = round(wall, 3)
    result["cpu_s"] = round(used, 3)
    result["nginx_cpu_s"] = round(nginx_used, 3)
    result["wrk_cpu_s"] = round(wrk_used, 3)
    result["rest_of_machine_s"] = round(machine.busy - used - nginx_used - wrk_used - bench_used, 3)
    result["logged"] = logged.as_dict()
    if pinning.proxies is not None:
        result["proxy_cpus"] = {
            "cpus": sorted(pinning.proxies),
            "other_processes_s": round(proxy_cpus.busy - used, 3),
            "interrupts_s": round(proxy_cpus.interrupts, 3),
            "idle_s": round(proxy_cpus.idle, 3),
            "steal_s": round(proxy_cpus.steal, 3),
        }
    if load_cpus0 is not None and pinning.load is not None:
        load_cpus = CpuTimes.read(pinning.load) - load_cpus0
        result["load_cpus"] = {
            "cpus": sorted(pinning.load),
            "idle_s": round(load_cpus.idle, 3),
            "steal_s": round(load_cpus.steal, 3),
        }
    result["loadavg_after"] = round(os.getloadavg()[0], 2)
    if "error" in result:
        return result
    try:
        result.update(parse_wrk(out.read_text(errors="replace")))
    except (OSError, ValueError) as exc:
        result["error"] = f"cannot read wrk's output: {exc}"
        return result
    if result["requests"] == 0:
        result["error"] = "wrk completed no request"
        return result
    result["cpu_us_per_request"] = used / result["requests"] * 1e6
    result["nginx_cpu_us_per_request"] = nginx_used / result["requests"] * 1e6
    result["proxy_busy"] = used / result["duration_s"] if result["duration_s"] else float("nan")
    return result


# --- figures -------------------------------------------------------------------------------------


def summarise(rounds: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per proxy: medians over its good rounds, error totals; then meshgate over each peer
    (``meshgate_over_haproxy``, ``meshgate_over_nginx_proxy``)."""
    summary: dict[str, Any] = {}
    for name in PROXIES:
        good = [r for r in rounds if r["proxy"] == name and not r.get("error")]

        def med(key: str, rows: Sequence[Mapping[str, Any]] = good) -> float:
            return median([r[key] for r in rows])

        errors: Counter[str] = Counter()
        logged: Counter[str] = Counter()
        for r in good:
            errors.update(r["socket_errors"])
            logged.update(r["logged"]["by_class"])
        summary[name] = {
            "rounds_ok": len(good),
            "rounds_failed": sum(1 for r in rounds if r["proxy"] == name and r.get("error")),
            "median_rps": med("rps"),
            "min_rps": min((r["rps"] for r in good), default=float("nan")),
            "max_rps": max((r["rps"] for r in good), default=float("nan")),
            "median_p50_s": med("p50_s"),
            "median_p90_s": med("p90_s"),
            "median_p99_s": med("p99_s"),
            "median_p999_s": med("p999_s", [r for r in good if "p999_s" in r]),
            "median_cpu_us_per_request": med("cpu_us_per_request"),
            "min_cpu_us_per_request": min((r["cpu_us_per_request"] for r in good), default=float("nan")),
            "max_cpu_us_per_request": max((r["cpu_us_per_request"] for r in good), default=float("nan")),
            "median_proxy_busy": med("proxy_busy"),
            "median_nginx_cpu_us_per_request": med("nginx_cpu_us_per_request"),
            "median_rest_of_machine_s": med("rest_of_machine_s"),
            "requests_total": sum(r["requests"] for r in good),
            "non_2xx_3xx_total": sum(r["non_2xx_3xx"] for r in good),
            "socket_errors_total": dict(errors),
            "logged_by_class_total": dict(logged),
            "logged_cut_by_client_total": sum(r["logged"]["cut_by_client"] for r in good),
            "median_proxy_cpus": {
                key: median([r["proxy_cpus"][key] for r in good if "proxy_cpus" in r])
                for key in ("idle_s", "interrupts_s", "other_processes_s", "steal_s")
            },
            "median_load_cpus_idle_s": median([r["load_cpus"]["idle_s"] for r in good if "load_cpus" in r]),
        }
    m = summary["meshgate"]
    for peer in PEERS:
        h = summary[peer]
        summary[f"meshgate_over_{peer}"] = {
            "rps": _ratio(m["median_rps"], h["median_rps"]),
            "cpu_us_per_request": _ratio(m["median_cpu_us_per_request"], h["median_cpu_us_per_request"]),
            "p50": _ratio(m["median_p50_s"], h["median_p50_s"]),
            "p99": _ratio(m["median_p99_s"], h["median_p99_s"]),
            "p999": _ratio(m["median_p999_s"], h["median_p999_s"]),
        }
    return summary


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def problems(record: Mapping[str, Any]) -> list[str]:
    """What went wrong in the measured rounds (and the profile's): failed rounds, responses other
    than 2xx/3xx, socket errors, requests a proxy logged with another status than 2xx or fewer
    2xx than wrk completed, meshgate's own error counters and the nginx proxy's error log.
    Empty: a clean run."""
    found: list[str] = []
    for r in record.get("rounds", []):
        where = f"round {r['round']} {r['proxy']}"
        if r.get("error"):
            found.append(f"{where}: failed: {r['error']}")
            continue
        if r["non_2xx_3xx"]:
            found.append(f"{where}: {r['non_2xx_3xx']} responses with a status of 400 or more (wrk)")
        if r["socket_errors_total"]:
            found.append(f"{where}: socket errors {r['socket_errors']} (wrk)")
        others = {k: v for k, v in r["logged"]["by_class"].items() if k != "2xx"}
        if others:
            found.append(f"{where}: the proxy logged {others}")
        logged_2xx = r["logged"]["by_class"].get("2xx", 0)
        if logged_2xx < r["requests"]:  # each request wrk completed was answered, so logged
            found.append(
                f"{where}: the proxy logged {logged_2xx} 2xx for the {r['requests']} requests wrk completed"
            )
        if r["logged"]["other_errors"]:
            found.append(f"{where}: the proxy logged errors {r['logged']['other_errors']}")
        warm = r.get("warmup", {})
        if warm.get("error") or warm.get("non_2xx_3xx") or warm.get("socket_errors_total"):
            found.append(f"{where}: its warm-up: {warm}")
    stats = record.get("meshgate_stats")
    if stats:
        for key, http in stats.get("http", {}).items():
            for field in ("upstream_errors", "refused"):
                if http.get(field):
                    found.append(f"meshgate {key} {field}: {http[field]}")
            if http.get("retries"):
                found.append(f"meshgate {key} retries: {http['retries']}")
    elif record.get("rounds"):
        found.append("meshgate wrote no stats (it did not exit cleanly on SIGTERM)")
    for line in record.get("nginx_proxy_error_log") or []:
        found.append(f"the nginx proxy's error log: {line}")
    return found


# --- the profile ---------------------------------------------------------------------------------


def _profile(
    hop: Hop, nginx: Proc, params: Params, pinning: Pinning, root: Path, out: Path
) -> dict[str, Any]:
    """Two extra meshgate rounds under py-spy (sampling slows the target: their figures are not
    results): one recorded as speedscope, one as collapsed stacks (summarised here by function)
    with a few ``py-spy dump``s of the running process on the side."""
    if not Profiler.available():
        say("--profile: py-spy is not installed (pip install py-spy); skipping the profile")
        return {"skipped": "py-spy not found"}
    out.mkdir(parents=True, exist_ok=True)
    pid, seconds = hop.proc.pid, params.seconds
    profile: dict[str, Any] = {"dir": _shown(out), "rate_hz": PROFILE_RATE, "seconds": seconds}

    say(f"profile: meshgate under py-spy record --format speedscope ({seconds} s)")
    speedscope = out / "meshgate.speedscope.json"
    spy = subprocess.Popen(
        ["py-spy", "record", "--pid", str(pid), "--rate", str(PROFILE_RATE), "--format", "speedscope",
         "--output", str(speedscope), "--duration", str(seconds + 1), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        time.sleep(0.5)  # py-spy attaches
        result = _wrk_round(hop, nginx, seconds, params.connections, pinning, root, "profile-speedscope")
        spy.wait(60)
    finally:
        if spy.poll() is None:
            spy.kill()
            spy.wait()
    profile["speedscope"] = {"file": _shown(speedscope), "round_under_profiler": _brief(result)}

    say(f"profile: meshgate under py-spy record --format raw ({seconds} s), with py-spy dumps")
    collapsed = out / "meshgate.collapsed.txt"
    dumps = out / "meshgate.dumps.txt"
    profiler = Profiler(pid, collapsed, rate=PROFILE_RATE).start()
    wrk_out = root / "wrk-profile-raw.txt"
    truncate(hop.log)
    cpu0 = cpu_seconds(pid)
    wrk = _start_wrk(hop, seconds, params.connections, pinning, wrk_out)
    try:
        with dumps.open("w") as file:
            for i in range(3):
                time.sleep(seconds / 4)
                file.write(f"--- py-spy dump at {(i + 1) * seconds / 4:.1f} s of {seconds} s\n")
                file.flush()
                subprocess.run(
                    ["py-spy", "dump", "--pid", str(pid), "--nonblocking"],
                    stdout=file, stderr=subprocess.STDOUT, timeout=30, check=False,
                )  # fmt: skip
        wrk.popen.wait(seconds + 30)
    finally:
        wrk.kill()
        profiler.stop()
    raw_round: dict[str, Any] = {"cpu_s": round(cpu_seconds(pid) - cpu0, 3)}
    with contextlib.suppress(OSError, ValueError):
        raw_round.update(parse_wrk(wrk_out.read_text(errors="replace")))
        raw_round["cpu_us_per_request"] = raw_round["cpu_s"] / raw_round["requests"] * 1e6
    truncate(hop.log)
    profile["raw"] = {
        "file": _shown(collapsed),
        "dumps": _shown(dumps),
        "round_under_profiler": _brief(raw_round),
        **summarise_stacks(collapsed, PROFILE_TOP, _NODE_PLUMBING),
    }
    return profile


def _shown(path: Path) -> str:
    """A path as the record shows it: relative to the repository when inside it."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def _brief(result: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("rps", "requests", "p50_s", "p99_s", "cpu_s", "cpu_us_per_request", "non_2xx_3xx",
            "socket_errors_total", "error")  # fmt: skip
    return {key: result[key] for key in keys if key in result}


#: frames on every stack of the node besides the harness's (its entry point): no information
_NODE_PLUMBING: Final = ("bench/http_node.py", "http_node.py")
