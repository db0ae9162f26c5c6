"""The ``memory`` scenario: RSS of an idle meshgate local proxy and edge, and what 1,000 idle
keep-alive connections add to it, plain and TLS, against HAProxy and nginx doing the same.

Every measurement is a fresh process of the proxy measured (no allocator state carried from
another kind of connection): started, left to settle, its idle RSS read; then a client process
(``bench.memory_client``) warms it up with a few closed connections, the RSS is read again
(the base), the client opens N connections with one request each and holds them idle, and the
RSS is read once more. Per connection: (held - base) / N. Rounds interleave the proxies and the
kinds: meshgate proxy, HAProxy, meshgate edge, nginx, for plain, mTLS, HTTPS in turn.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final

from bench.harness import (
    RESULTS_DIR,
    Owned,
    machine_info,
    median,
    say,
    terminate_as_exit,
    utc_stamp,
    workdir,
    write_results,
)
from bench.http_setup import versions
from bench.l4_setup import wait_until
from bench.memory_report import render
from bench.memory_setup import (
    IDLE_TIMEOUT_S,
    KINDS,
    START_TIMEOUT,
    Mesh,
    Subject,
    client_argv,
    missing_binaries,
    start_mesh,
    subjects,
)

SCENARIO: Final = "memory"
#: meshgate's processes against each peer, and the kinds each pair is compared on
PAIRS: Final = (
    ("meshgate-proxy", ("plain", "mtls")),
    ("meshgate-edge", ("plain", "https")),
)
PEERS: Final = ("haproxy", "nginx")
#: the issue's aims (decimal units, as written there)
AIM_IDLE_BYTES: Final = 40e6
AIM_TLS_BYTES_PER_CONNECTION: Final = 30e3
#: settling: read every TICK s; settled when RSS moved by at most TOLERANCE over WINDOW s
#: (QUICK_WINDOW with --quick: a smoke run, whose figures are not results)
TICK: Final = 0.25
WINDOW: Final = 2.0
QUICK_WINDOW: Final = 1.0
TOLERANCE: Final = 64 * 1024
LEAST: Final = 1.0
MOST: Final = 20.0


@dataclass(frozen=True)
class Params:
    connections: int = 1000
    rounds: int = 3
    warmup: int = 20  # connections opened and closed before the base reading
    keep: bool = False
    quick: bool = False
    results_dir: str | None = None  # default: bench/results

    @classmethod
    def quick_defaults(cls) -> dict[str, int]:
        return {"rounds": 1, "connections": 200}


# --- reading a process from /proc ------------------------------------------------------------------


@dataclass(frozen=True)
class Reading:
    """Memory of a process and its descendants (summed), its threads and open sockets."""

    rss: int  # VmRSS
    anon: int  # RssAnon: private memory the process wrote (heap, stacks)
    file: int  # RssFile: mapped files (the interpreter, shared libraries)
    shmem: int  # RssShmem: shared memory (HAProxy's TLS session cache)
    pss: int | None  # smaps_rollup Pss: shared pages divided among the processes that map them
    pss_anon: int | None
    threads: int
    sockets: int
    processes: int


def _status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        parts = value.split()
        if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "Threads") and parts:
            out[key] = int(parts[0]) * (1 if key == "Threads" else 1024)
    return out


def _rollup(pid: int) -> dict[str, int]:
    out = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("Pss", "Pss_Anon"):
                out[key] = int(value.split()[0]) * 1024
    return out


def _sockets(pid: int) -> int:
    count = 0
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
    return count


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (from /proc/<pid>/task/*/children)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{current}/task"):
                with contextlib.suppress(OSError):
                    todo += [
                        int(c) for c in Path(f"/proc/{current}/task/{task}/children").read_text().split()
                    ]
    return found


def read(pid: int) -> Reading:
    pids = tree(pid)
    status = [_status(p) for p in pids]
    rollups = [_rollup(p) for p in pids]
    pss = [r.get("Pss") for r in rollups]
    pss_anon = [r.get("Pss_Anon") for r in rollups]
    return Reading(
        rss=sum(s.get("VmRSS", 0) for s in status),
        anon=sum(s.get("RssAnon", 0) for s in status),
        file=sum(s.get("RssFile", 0) for s in status),
        shmem=sum(s.get("RssShmem", 0) for s in status),
        pss=None if None in pss else sum(p or 0 for p in pss),
        pss_anon=None if None in pss_anon else sum(p or 0 for p in pss_anon),
        threads=sum(s.get("Threads", 0) for s in status),
        sockets=sum(_sockets(p) for p in pids),
        processes=len(pids),
    )


def settle(pid: int, alive: Callable[[], bool], window: float = WINDOW) -> tuple[Reading, dict[str, Any]]:
    """Read until RSS has moved by at most TOLERANCE over the last ``window`` seconds (at least
    LEAST s, at most MOST s); the last reading, how long it took and whether it settled."""
    started = time.monotonic()
    history: list[tuple[float, int]] = []
    while True:
        if not alive():
            raise RuntimeError(f"process {pid} exited while being measured")
        reading = read(pid)
        now = time.monotonic()
        history.append((now, reading.rss))
        recent = [rss for at, rss in history if at >= now - window]
        waited = now - started
        covered = history[0][0] <= now - window
        if waited >= LEAST and covered and max(recent) - min(recent) <= TOLERANCE:
            return reading, {"waited_s": round(waited, 2), "settled": True}
        if waited >= MOST:
            return reading, {"waited_s": round(waited, 2), "settled": False,
                             "moved_bytes_last_window": max(recent) - min(recent)}  # fmt: skip
        time.sleep(TICK)


# --- the client that holds the connections ------------------------------------------------------------


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


class Client:
    """``bench.memory_client`` with its standard streams as a line protocol; stopped by PID."""

    def __init__(self, spec: Path, log: Path) -> None:
        with log.open("ab") as err:
            self.popen: subprocess.Popen[bytes] = subprocess.Popen(
                client_argv(spec), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                start_new_session=True, preexec_fn=_die_with_parent, bufsize=0,
            )  # fmt: skip
        self.log = log
        self._buffer = b""

    def line(self, timeout: float) -> dict[str, Any]:
        assert self.popen.stdout is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"the client said nothing within {timeout:.0f} s")
            ready, _, _ = select.select([self.popen.stdout], [], [], left)
            if ready:
                chunk = os.read(self.popen.stdout.fileno(), 65536)
                if not chunk:
                    tail = self.log.read_text(errors="replace")[-1500:]
                    raise RuntimeError(f"the client exited ({self.popen.poll()}): {tail}")
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        message: dict[str, Any] = json.loads(line)
        return message

    def send(self, command: str) -> None:
        stdin: IO[bytes] | None = self.popen.stdin
        assert stdin is not None
        stdin.write(command.encode() + b"\n")
        stdin.flush()

    def stop(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)
        for stream in (self.popen.stdin, self.popen.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


# --- the run ---------------------------------------------------------------------------------------


def run(params: Params) -> dict[str, Any]:
    """The whole scenario; returns the record that was written to the results directory."""
    stamp = utc_stamp()
    results_dir = Path(params.results_dir) if params.results_dir else RESULTS_DIR
    missing = missing_binaries()
    if missing:
        raise RuntimeError(f"the memory benchmark needs {', '.join(missing)} (apt: nginx haproxy)")
    record: dict[str, Any] = {
        "scenario": SCENARIO,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "params": asdict(params),
        "setup": {
            **{k: v for k, v in versions().items() if k != "wrk"},
            "openssl": _openssl_version(),
            "fd_limit": _raise_fd_limit(2 * params.connections + 1000),
            "idle_timeouts_s": IDLE_TIMEOUT_S,
            "settle": {
                "tick_s": TICK,
                "window_s": QUICK_WINDOW if params.quick else WINDOW,
                "tolerance_bytes": TOLERANCE,
                "least_s": LEAST,
                "most_s": MOST,
            },
            "pinning": "none: RSS does not depend on which CPU a process runs on",
        },
    }
    say(f"machine: {record['machine']['cpus']} CPUs, load {record['machine']['loadavg_at_start']}")
    owned = Owned()
    with terminate_as_exit(), workdir(SCENARIO, keep=params.keep) as root:
        try:
            _scenario(params, root, owned, record)
        except BaseException:
            for log in sorted(root.rglob("*.log")):
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-10:])
                if tail.strip():
                    print(f"--- {log.relative_to(root)} (last lines)\n{tail}", file=sys.stderr)
            raise
        finally:
            owned.stop_all()
    record["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    record["summary"] = summarise(record["measurements"], params.connections)
    record["problems"] = problems(record)
    record["headline"] = headline(record["summary"])
    markdown = render(record)
    json_path, md_path = write_results(SCENARIO, record, markdown, stamp, directory=results_dir)
    print(markdown)
    shown = json_path.relative_to(Path.cwd()) if json_path.is_relative_to(Path.cwd()) else json_path
    print(f"\nresults: {shown}\n         {md_path.name}")
    return record


def _openssl_version() -> str:
    import ssl

    return ssl.OPENSSL_VERSION


def _raise_fd_limit(wanted: int) -> dict[str, int]:
    """Children inherit the limit: the proxies measured need N connections plus their own."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raise RuntimeError(
            f"open files are limited to {soft} (hard {hard}); {wanted} needed: use --connections"
        )
    return {"soft": soft, "hard": hard}


def _scenario(params: Params, root: Path, owned: Owned, record: dict[str, Any]) -> None:
    say("starting the mesh: nginx (workload), global CP, zone CP, ingress, web-1")
    started = time.monotonic()
    mesh = start_mesh(root, owned.add)
    record["setup"]["mesh_start_s"] = round(time.monotonic() - started, 1)
    measured = subjects(mesh, params.connections)
    record["setup"]["subjects"] = {
        name: {"label": s.label, "kinds": sorted(s.targets), **s.notes} for name, s in measured.items()
    }
    measurements: list[dict[str, Any]] = []
    record["measurements"] = measurements
    for i in range(params.rounds):
        for kind in KINDS:
            for name, subject in measured.items():
                if kind not in subject.targets:
                    continue
                label = f"round {i + 1} {subject.label} {kind}"
                try:
                    result = measure(subject, kind, mesh, params, root / f"r{i + 1}-{name}-{kind}")
                except Exception as exc:
                    result = {"error": f"{type(exc).__name__}: {exc}"}
                    say(f"{label}: FAILED: {result['error']}")
                else:
                    say(
                        f"{label}: idle {result['idle']['rss'] / 1e6:.1f} MB, "
                        f"{result['per_1000_bytes'] / 1e6:.2f} MB per 1,000 connections "
                        f"({result['held']} held; +{result['sockets_added']} sockets)"
                    )
                measurements.append({"round": i + 1, "subject": name, "kind": kind, **result})


def measure(subject: Subject, kind: str, mesh: Mesh, params: Params, directory: Path) -> dict[str, Any]:
    """One fresh process of ``subject``: idle, after the warm-up (base), with N idle connections
    of ``kind`` held by a client process."""
    target = subject.targets[kind]
    window = QUICK_WINDOW if params.quick else WINDOW
    proc = subject.start(directory)
    client: Client | None = None
    result: dict[str, Any] = {}
    try:
        launched = time.monotonic()
        wait_until(lambda: subject.ready(proc), timeout=START_TIMEOUT, what=f"{subject.label} to be ready")
        result["ready_after_s"] = round(time.monotonic() - launched, 2)
        idle, result["idle_settle"] = settle(proc.pid, proc.alive, window)
        spec = directory / "client.json"
        spec.write_text(json.dumps({
            "host": "127.0.0.1", "port": target.port, "request_host": target.request_host, "path": "/",
            "tls": target.tls, "count": params.connections, "warmup": params.warmup, "first_deadline": 30,
        }))  # fmt: skip
        client = Client(spec, directory / "client.log")
        warm = client.line(timeout=90)
        result["warmup"] = warm
        if not warm.get("ok"):
            raise RuntimeError(f"warm-up: {warm.get('error')}")
        base, result["base_settle"] = settle(proc.pid, proc.alive, window)
        client.send("open")
        opened = client.line(timeout=120 + params.connections * 0.1)
        result["open"] = opened
        held, result["held_settle"] = settle(proc.pid, proc.alive, window)
        client.send("close")
        closed = client.line(timeout=60)
        result["closed"] = closed
    finally:
        if client is not None:
            client.stop()
        if proc.stop(10) is None:
            proc.kill()
    n = int(opened["ok"])
    if n == 0:
        raise RuntimeError(f"no connection was set up: {opened.get('errors')}")
    result.update(
        idle=asdict(idle),
        base=asdict(base),
        held_reading=asdict(held),
        held=n,
        still_open_at_end=closed["still_open"],
        sockets_added=held.sockets - base.sockets,
        per_1000_bytes=(held.rss - base.rss) / n * 1000,
        per_1000_anon_bytes=(held.anon - base.anon) / n * 1000,
        per_1000_pss_bytes=(held.pss - base.pss) / n * 1000
        if held.pss is not None and base.pss is not None
        else None,
        tls=warm.get("tls") or None,
    )
    return result


# --- figures -------------------------------------------------------------------------------------


def _med(values: Sequence[float | None]) -> float:
    present = [v for v in values if v is not None]
    return median(present) if present else float("nan")


def summarise(measurements: Sequence[Mapping[str, Any]], connections: int) -> dict[str, Any]:
    """Per proxy: idle RSS (every fresh process's), and per kind the RSS per 1,000 idle
    connections; medians over rounds, with min and max. Then meshgate over each peer."""
    good = [m for m in measurements if not m.get("error")]
    summary: dict[str, Any] = {"connections": connections, "subjects": {}}
    names = sorted({m["subject"] for m in measurements})
    for name in names:
        mine = [m for m in good if m["subject"] == name]
        idle = [m["idle"]["rss"] for m in mine]
        entry: dict[str, Any] = {
            "idle_rss_bytes": _med(idle),
            "idle_rss_min_bytes": min(idle, default=float("nan")),
            "idle_rss_max_bytes": max(idle, default=float("nan")),
            "idle_pss_bytes": _med([m["idle"]["pss"] for m in mine]),
            "idle_anon_bytes": _med([m["idle"]["anon"] for m in mine]),
            "idle_file_bytes": _med([m["idle"]["file"] for m in mine]),
            "idle_threads": _med([m["idle"]["threads"] for m in mine]),
            "samples": len(mine),
            "failed": sum(1 for m in measurements if m["subject"] == name and m.get("error")),
            "kinds": {},
        }
        for kind in KINDS:
            rows = [m for m in mine if m["kind"] == kind]
            if not rows and not any(m["subject"] == name and m["kind"] == kind for m in measurements):
                continue
            per = [m["per_1000_bytes"] for m in rows]
            entry["kinds"][kind] = {
                "per_1000_bytes": _med(per),
                "per_1000_min_bytes": min(per, default=float("nan")),
                "per_1000_max_bytes": max(per, default=float("nan")),
                "per_1000_anon_bytes": _med([m["per_1000_anon_bytes"] for m in rows]),
                "per_1000_pss_bytes": _med([m["per_1000_pss_bytes"] for m in rows]),
                "rounds_ok": len(rows),
                "held": _med([m["held"] for m in rows]),
                "sockets_added": _med([m["sockets_added"] for m in rows]),
                "tls": next((m["tls"] for m in rows if m.get("tls")), None),
            }
        summary["subjects"][name] = entry
    ratios: dict[str, Any] = {}
    subjects_ = summary["subjects"]
    for name, kinds in PAIRS:
        for peer in PEERS:
            if name not in subjects_ or peer not in subjects_:
                continue
            mine, theirs = subjects_[name], subjects_[peer]
            key = f"{name}/{peer}"
            ratios[key] = {"idle": _ratio(mine["idle_rss_bytes"], theirs["idle_rss_bytes"])}
            for kind in kinds:
                a, b = mine["kinds"].get(kind), theirs["kinds"].get(kind)
                if a and b:
                    ratios[key][kind] = _ratio(a["per_1000_bytes"], b["per_1000_bytes"])
    summary["ratios"] = ratios
    summary["aims"] = aims(subjects_)
    return summary


def _ratio(a: float, b: float) -> float:
    return a / b if b and b == b and a == a else float("nan")


def aims(subjects_: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The issue's aims, judged on the medians: idle under 40 MB, under 30 KB per idle TLS
    connection (meshgate's processes only)."""
    out = []
    for name, tls_kind in (("meshgate-proxy", "mtls"), ("meshgate-edge", "https")):
        s = subjects_.get(name)
        if not s:
            continue
        idle = s["idle_rss_bytes"]
        out.append({"subject": name, "aim": "idle RSS under 40 MB", "value": idle,
                    "met": idle == idle and idle < AIM_IDLE_BYTES})  # fmt: skip
        k = s["kinds"].get(tls_kind)
        if k:
            per = k["per_1000_bytes"] / 1000
            out.append({"subject": name, "aim": f"under 30 KB per idle TLS connection ({tls_kind})",
                        "value": per, "met": per == per and per < AIM_TLS_BYTES_PER_CONNECTION})  # fmt: skip
    return out


def problems(record: Mapping[str, Any]) -> list[str]:
    """What makes the run's figures doubtful: failed measurements, connections that failed or
    were closed while held, readings that did not settle."""
    out = []
    for m in record.get("measurements", []):
        where = f"round {m['round']} {m['subject']} {m['kind']}"
        if m.get("error"):
            out.append(f"{where}: {m['error']}")
            continue
        opened = m["open"]
        if opened["failed"]:
            out.append(f"{where}: {opened['failed']} connections failed ({opened['errors']})")
        if opened.get("said_close"):
            out.append(f"{where}: {opened['said_close']} responses said Connection: close")
        if m["still_open_at_end"] < m["held"]:
            out.append(
                f"{where}: {m['held'] - m['still_open_at_end']} connections closed by the proxy while held"
            )
        for phase in ("idle_settle", "base_settle", "held_settle"):
            if not m[phase]["settled"]:
                out.append(f"{where}: RSS still moving after {m[phase]['waited_s']} s ({phase})")
    return out


def headline(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rows the suite's combined table shows: meshgate, HAProxy, the ratio, the aim."""
    subjects_ = summary["subjects"]
    hp = subjects_.get("haproxy", {})
    rows = []
    aims_ = {(a["subject"], a["aim"].split(" (")[0]): a for a in summary.get("aims", [])}
    for name, kinds in PAIRS:
        s = subjects_.get(name)
        if not s:
            continue
        label = "local proxy" if name == "meshgate-proxy" else "edge"
        aim = aims_.get((name, "idle RSS under 40 MB"))
        rows.append({
            "figure": f"memory: idle {label} RSS", "unit": "MB",
            "meshgate": s["idle_rss_bytes"] / 1e6, "peer": hp.get("idle_rss_bytes", float("nan")) / 1e6,
            "peer_name": "HAProxy", "aim": "< 40 MB", "aim_met": aim["met"] if aim else None,
        })  # fmt: skip
        for kind in kinds:
            mine, theirs = s["kinds"].get(kind), hp.get("kinds", {}).get(kind)
            if not mine:
                continue
            tls = kind != "plain"
            aim = aims_.get((name, "under 30 KB per idle TLS connection")) if tls else None
            rows.append({
                "figure": f"memory: {label}, per idle {'mTLS' if kind == 'mtls' else kind.upper() if tls else 'plain HTTP'} connection",
                "unit": "KB", "meshgate": mine["per_1000_bytes"] / 1e6,
                "peer": theirs["per_1000_bytes"] / 1e6 if theirs else float("nan"),
                "peer_name": "HAProxy", "aim": "< 30 KB" if tls else "", "aim_met": aim["met"] if aim else None,
            })  # fmt: skip
    for row in rows:
        row["ratio"] = _ratio(row["meshgate"], row["peer"])
    return rows
