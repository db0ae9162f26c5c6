"""The data path: an mTLS L4 relay chain's throughput and CPU per byte, meshgate against HAProxy
doing the same three hops.

    iperf3 client -> A (plain in, mTLS out) -> zone ingress (SNI passthrough) -> B (mTLS in) -> iperf3 server

Each hop of each chain is its own process: three ``bench.l4_node`` processes (uvloop, one event
loop each) and three HAProxy processes (``nbthread 1``). A mesh PKI is generated for the run; no
control plane is involved. Rounds alternate between the chains (meshgate, HAProxy, meshgate, ...),
each one iperf3 test through the chain's A with a fresh one-test iperf3 server behind its B, with
the CPU time of the chain's three processes read from /proc before and after.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import json
import os
import resource
import ssl
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from bench.harness import (
    CpuSplit,
    Owned,
    cpu_list,
    cpu_seconds,
    machine_info,
    median,
    peak_rss_bytes,
    rss_bytes,
    say,
    scenario_run,
    utc_stamp,
    write_results,
)
from bench.l4_report import render
from bench.l4_setup import (
    HOPS,
    IPERF3,
    LOCALHOST,
    SNI,
    Pki,
    Ports,
    Proc,
    free_ports,
    haproxy_argv,
    haproxy_configs,
    haproxy_version,
    iperf3_version,
    listening,
    make_pki,
    meshgate_argv,
    meshgate_specs,
    wait_until,
)
from meshgate.pki.tls import client_context
from meshgate.proxy.identity import TlsIdentity

SCENARIO: Final = "l4"
CHAINS: Final = ("meshgate", "haproxy")
START_TIMEOUT: Final = 30.0
SERVER_EXIT_TIMEOUT: Final = 15.0  # for the one-test iperf3 server, once the client is done
CHECK_SECONDS: Final = 1


@dataclass(frozen=True)
class Params:
    seconds: int = 10  # per iperf3 test
    rounds: int = 5  # per chain
    streams: int = 1  # iperf3 -P
    pin: bool = True
    keep: bool = False
    quick: bool = False

    @classmethod
    def quick_defaults(cls) -> dict[str, int]:
        return {"seconds": 3, "rounds": 1}


@dataclass(frozen=True)
class Pinning(CpuSplit):
    """Which CPUs the load (iperf3 client and server, and the bench itself) and the proxies of
    both chains run on; None: wherever the scheduler puts them."""

    def describe(self) -> str:
        if self.load is None or self.proxies is None:
            return "no pinning: every process runs wherever the scheduler puts it"
        return (
            f"iperf3 client and server (and the bench) on CPU {cpu_list(self.load)}; the three proxy "
            f"processes of both chains on CPU {cpu_list(self.proxies)} (they share it, so throughput "
            "is what one core of proxying carries)"
        )


@dataclass
class Chain:
    name: str
    ports: Ports
    procs: dict[str, Proc] = field(default_factory=dict)

    def pids(self) -> dict[str, int]:
        return {hop: proc.pid for hop, proc in self.procs.items()}


# --- the run -------------------------------------------------------------------------------------


def run(params: Params) -> dict[str, Any]:
    """The whole scenario; returns the record that was written to bench/results."""
    stamp = utc_stamp()
    pinning = Pinning.choose(params.pin)
    record: dict[str, Any] = {
        "scenario": SCENARIO,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "params": asdict(params),
        "setup": {
            "haproxy": haproxy_version(),
            "haproxy_threads": 1,
            "iperf3": iperf3_version(),
            "meshgate_event_loop": "uvloop, one process per hop",
            "irq_time_accounting": irq_time_accounting(),
            "pinning": pinning.describe(),
            "pinned_cpus": pinning.as_record(),
        },
    }
    say(f"machine: {record['machine']['cpus']} CPUs, load {record['machine']['loadavg_at_start']}")
    say(f"pinning: {pinning.describe()}")
    with scenario_run(SCENARIO, pinning, keep=params.keep) as (root, owned):
        _scenario(params, pinning, root, owned, record)
        record["proxy_stats"] = _final_stats(root)
    record["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    markdown = render(record)
    json_path, md_path = write_results(SCENARIO, record, markdown, stamp)
    print(markdown)
    shown = json_path.relative_to(Path.cwd()) if json_path.is_relative_to(Path.cwd()) else json_path
    print(f"\nresults: {shown}\n         {md_path.name}")
    return record


def _scenario(params: Params, pinning: Pinning, root: Path, owned: Owned, record: dict[str, Any]) -> None:
    say("generating the mesh PKI and the chains' configurations")
    pki = make_pki(root / "pki")
    p = free_ports(9)
    chains = {
        "meshgate": Chain("meshgate", Ports(a=p[0], ingress=p[1], b=p[2], workload=p[3], a_inbound=p[4])),
        "haproxy": Chain("haproxy", Ports(a=p[5], ingress=p[6], b=p[7], workload=p[8])),
    }
    specs = meshgate_specs(pki, chains["meshgate"].ports, root)
    configs = haproxy_configs(pki, chains["haproxy"].ports, root)
    record["setup"]["ports"] = {name: asdict(chain.ports) for name, chain in chains.items()}
    record["setup"]["tls"] = {"meshgate": _meshgate_handshake(pki)}

    say("starting the proxies (three per chain)")
    for hop in HOPS:
        argv = {"meshgate": meshgate_argv(specs[hop]), "haproxy": haproxy_argv(configs[hop])}
        for name, chain in chains.items():
            proc = Proc(f"{name}-{hop}", argv[name], root / f"{name}-{hop}.log", cpus=pinning.proxies)
            chain.procs[hop] = owned.add(proc)
    for hop in HOPS:
        ready = Path(json.loads(specs[hop].read_text())["ready_file"])
        wait_until(ready.exists, timeout=START_TIMEOUT, what=f"meshgate {hop} to listen")
    hp = chains["haproxy"].ports
    for hop, port in (("a", hp.a), ("ingress", hp.ingress), ("b", hp.b)):
        wait_until(functools.partial(listening, port), timeout=START_TIMEOUT, what=f"haproxy {hop} to listen")
    for chain in chains.values():
        for proc in chain.procs.values():
            if not proc.alive():
                raise RuntimeError(f"{proc!r} exited at start:\n{proc.tail()}")
    record["setup"]["pids"] = {name: chain.pids() for name, chain in chains.items()}
    record["setup"]["cpus_allowed"] = {  # as the kernel has it, to show the pinning took
        name: {hop: sorted(os.sched_getaffinity(pid)) for hop, pid in chain.pids().items()}
        for name, chain in chains.items()
    }

    time.sleep(1.0)
    record["rss"] = {
        name: {hop: {"idle_bytes": rss_bytes(proc.pid)} for hop, proc in chain.procs.items()}
        for name, chain in chains.items()
    }

    say(
        f"checking that iperf3 (control and data connections) gets through both chains ({CHECK_SECONDS} s each)"
    )
    record["check"] = {}
    for name, chain in chains.items():
        result = _iperf_round(chain, CHECK_SECONDS, params.streams, pinning, root, f"check-{name}")
        record["check"][name] = result
        if result.get("error"):
            raise RuntimeError(f"iperf3 does not get through the {name} chain: {result['error']}")
        idle_hops = [hop for hop, used in result["cpu_s"].items() if used <= 0]
        if idle_hops:
            raise RuntimeError(f"the {name} chain carried the test without using hop(s) {idle_hops}")
        say(f"  {name}: {result['gbit_per_s']:.2f} Gbit/s, every hop busy")

    rounds: list[dict[str, Any]] = []
    record["rounds"] = rounds
    for i in range(params.rounds):
        for name in CHAINS:
            result = _iperf_round(
                chains[name], params.seconds, params.streams, pinning, root, f"{i + 1}-{name}"
            )
            result["round"] = i + 1
            rounds.append(result)
            if result.get("error"):
                say(f"round {i + 1} {name}: FAILED: {result['error']}")
            else:
                say(
                    f"round {i + 1} {name}: {result['gbit_per_s']:.2f} Gbit/s, "
                    f"{result['cpu_s_per_gb']:.2f} CPU s/GB ({result['cpu_total_s']:.1f} s CPU)"
                )

    for name, chain in chains.items():
        for hop, proc in chain.procs.items():
            entry = record["rss"][name][hop]
            entry["after_rounds_bytes"] = rss_bytes(proc.pid)
            entry["peak_bytes"] = peak_rss_bytes(proc.pid)
    record["setup"]["threads_after_rounds"] = {
        name: {hop: _threads(proc.pid) for hop, proc in chain.procs.items()} for name, chain in chains.items()
    }
    record["summary"] = summarise(rounds)
    record["setup"]["tls"]["haproxy"] = _haproxy_tls(root / "haproxy-b.log")
    record["haproxy_sessions"] = {hop: _haproxy_sessions(root / f"haproxy-{hop}.log") for hop in HOPS}
    for name, chain in chains.items():  # stopped now so that meshgate's stats files are written
        for hop, proc in chain.procs.items():
            if proc.stop(10) is None:
                say(f"{name} {hop} did not exit within 10 s of SIGTERM")


# --- one iperf3 test through one chain -----------------------------------------------------------


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


@dataclass(frozen=True)
class CpuTimes:
    """Seconds some CPUs spent, from /proc/stat: running processes (user, nice, system),
    interrupts (irq, softirq: charged to no process; loopback's receive path runs there), idle
    (idle, iowait), and stolen by the hypervisor."""

    processes: float
    interrupts: float
    idle: float
    steal: float

    @classmethod
    def read(cls, cpus: frozenset[int] | None = None) -> CpuTimes:
        """The sum over ``cpus`` (every CPU when None)."""
        ticks = os.sysconf("SC_CLK_TCK")
        total = [0] * 8
        for line in Path("/proc/stat").read_text().splitlines():
            name, *values = line.split()
            if not name.startswith("cpu") or name == "cpu":
                continue
            if cpus is None or int(name[3:]) in cpus:
                total = [a + int(b) for a, b in zip(total, values[:8], strict=True)]
        user, nice, system, idle, iowait, irq, softirq, steal = (t / ticks for t in total)
        return cls(user + nice + system, irq + softirq, idle + iowait, steal)

    def __sub__(self, other: CpuTimes) -> CpuTimes:
        return CpuTimes(
            self.processes - other.processes,
            self.interrupts - other.interrupts,
            self.idle - other.idle,
            self.steal - other.steal,
        )

    @property
    def busy(self) -> float:
        """Time spent running processes or interrupts (not idle, not stolen)."""
        return self.processes + self.interrupts


def irq_time_accounting() -> bool | None:
    """Whether the kernel accounts interrupt time apart (``CONFIG_IRQ_TIME_ACCOUNTING``). Without
    it, accounting is tick-based: a tick spent in an interrupt counts as irq/softirq in /proc/stat
    *and* as system time of the process that was running. None: the config is not readable."""
    with contextlib.suppress(OSError), gzip.open("/proc/config.gz", "rt") as config:
        return any(line.strip() == "CONFIG_IRQ_TIME_ACCOUNTING=y" for line in config)
    with contextlib.suppress(OSError):
        text = Path(f"/boot/config-{os.uname().release}").read_text()
        return "CONFIG_IRQ_TIME_ACCOUNTING=y" in text.splitlines()
    return None


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _iperf_round(
    chain: Chain, seconds: int, streams: int, pinning: Pinning, root: Path, label: str
) -> dict[str, Any]:
    """One iperf3 test from the client to the chain's A, a fresh one-test iperf3 server behind B;
    the chain's CPU time from /proc before and after (the server has exited by then)."""
    ports = chain.ports
    server = Proc(
        f"iperf3-server-{label}",
        [IPERF3, "-s", "-p", str(ports.workload), "-1", "-B", LOCALHOST],
        root / f"iperf3-server-{label}.log",
        cpus=pinning.load,
    )
    result: dict[str, Any] = {"chain": chain.name, "seconds": seconds}
    client: Proc | None = None
    try:
        wait_until(lambda: listening(ports.workload), timeout=10, what="the iperf3 server to listen")
        pids = chain.pids()
        before = {hop: cpu_seconds(pid) for hop, pid in pids.items()}
        machine0, proxy_cpus0 = CpuTimes.read(), CpuTimes.read(pinning.proxies)
        children0, self0 = _children_cpu_seconds(), _self_cpu_seconds()
        started = time.monotonic()
        out = root / f"iperf3-client-{label}.json"
        client = Proc(
            f"iperf3-client-{label}",
            [IPERF3, "-c", LOCALHOST, "-p", str(ports.a), "-t", str(seconds), "-P", str(streams), "-J",
             "--connect-timeout", "5000"],
            out, cpus=pinning.load, stderr=root / f"iperf3-client-{label}.log",
        )  # fmt: skip
        try:
            client.popen.wait(seconds + 30)
        except subprocess.TimeoutExpired:
            result["error"] = f"the iperf3 client did not finish within {seconds + 30} s"
            client.kill()
        wall = time.monotonic() - started
        try:
            server.popen.wait(SERVER_EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            result.setdefault("error", f"the iperf3 server did not exit within {SERVER_EXIT_TIMEOUT} s")
            server.kill()
        for hop, proc in chain.procs.items():
            if not proc.alive():
                raise RuntimeError(f"{chain.name} {hop} exited during the test:\n{proc.tail()}")
        after = {hop: cpu_seconds(pid) for hop, pid in pids.items()}
        machine, proxy_cpus = CpuTimes.read() - machine0, CpuTimes.read(pinning.proxies) - proxy_cpus0
        iperf_cpu = _children_cpu_seconds() - children0
        bench_cpu = _self_cpu_seconds() - self0
    finally:  # on errors and Ctrl-C too: the load never outlives its round
        if client is not None:
            client.kill()
        server.kill()
    result["wall_s"] = round(wall, 3)
    result["cpu_s"] = {hop: round(after[hop] - before[hop], 3) for hop in pids}
    result["cpu_total_s"] = round(sum(result["cpu_s"].values()), 3)
    result["iperf3_cpu_s"] = round(iperf_cpu, 3)
    result["machine_busy_s"] = round(machine.busy, 3)
    result["rest_of_machine_s"] = round(machine.busy - result["cpu_total_s"] - iperf_cpu - bench_cpu, 3)
    if pinning.proxies is not None:  # the proxies' CPU(s), on which nothing else of ours runs
        result["proxy_cpus"] = {
            "cpus": sorted(pinning.proxies),
            "processes_s": round(proxy_cpus.processes, 3),
            "other_processes_s": round(proxy_cpus.busy - result["cpu_total_s"], 3),
            "interrupts_s": round(proxy_cpus.interrupts, 3),
            "idle_s": round(proxy_cpus.idle, 3),
            "steal_s": round(proxy_cpus.steal, 3),
        }
    result["loadavg_after"] = round(os.getloadavg()[0], 2)
    if "error" not in result:
        result.update(_iperf_figures(out))
    if "error" not in result:
        gigabytes = result["bytes"] / 1e9
        result["cpu_s_per_gb"] = result["cpu_total_s"] / gigabytes if gigabytes else float("nan")
        result["cpu_s_per_gb_by_hop"] = {
            hop: used / gigabytes if gigabytes else float("nan") for hop, used in result["cpu_s"].items()
        }
    return result


def _iperf_figures(out: Path) -> dict[str, Any]:
    """What the iperf3 client's JSON report says: the receiver's byte count and rate."""
    try:
        report = json.loads(out.read_text())
    except (OSError, ValueError) as exc:
        return {"error": f"no iperf3 report ({exc})"}
    if report.get("error"):
        return {"error": f"iperf3: {report['error']}"}
    end = report.get("end", {})
    received = end.get("sum_received")
    if not received or not received.get("bytes"):
        return {"error": "iperf3 reports no bytes received"}
    return {
        "bytes": int(received["bytes"]),
        "gbit_per_s": float(received["bits_per_second"]) / 1e9,
        "bytes_sent": int(end.get("sum_sent", {}).get("bytes", 0)),
        "iperf3_cpu_percent": end.get("cpu_utilization_percent", {}),
    }


# --- figures -------------------------------------------------------------------------------------


def summarise(rounds: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per chain: medians over its good rounds; then meshgate / HAProxy for both figures."""
    summary: dict[str, Any] = {}
    for name in CHAINS:
        good = [r for r in rounds if r["chain"] == name and not r.get("error")]
        summary[name] = {
            "rounds_ok": len(good),
            "rounds_failed": sum(1 for r in rounds if r["chain"] == name and r.get("error")),
            "median_gbit_per_s": median([r["gbit_per_s"] for r in good]),
            "min_gbit_per_s": min((r["gbit_per_s"] for r in good), default=float("nan")),
            "max_gbit_per_s": max((r["gbit_per_s"] for r in good), default=float("nan")),
            "median_cpu_s_per_gb": median([r["cpu_s_per_gb"] for r in good]),
            "median_cpu_s_per_gb_by_hop": {
                hop: median([r["cpu_s_per_gb_by_hop"][hop] for r in good]) for hop in HOPS
            },
            "median_rest_of_machine_s": median([r["rest_of_machine_s"] for r in good]),
            "median_proxy_cpus": {
                key: median([r["proxy_cpus"][key] for r in good if "proxy_cpus" in r])
                for key in ("idle_s", "interrupts_s", "other_processes_s", "steal_s")
            },
        }
    m, h = summary["meshgate"], summary["haproxy"]
    summary["meshgate_over_haproxy"] = {
        "throughput": _ratio(m["median_gbit_per_s"], h["median_gbit_per_s"]),
        "cpu_s_per_gb": _ratio(m["median_cpu_s_per_gb"], h["median_cpu_s_per_gb"]),
    }
    return summary


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


# --- what the proxies saw ------------------------------------------------------------------------


def _meshgate_handshake(pki: Pki) -> dict[str, str | None]:
    """What A's client context and B's server context negotiate (the contexts the meshgate chain
    uses, handshaking in memory here: the proxies' own connections are not touched)."""
    b = TlsIdentity(pki.b.chain_pem, pki.b.key_pem, pki.root_pem)
    a_client = client_context(
        pki.root_pem, cert_chain_pem=pki.a.chain_pem, key_pem=pki.a.key_pem, server_hostname_check=False
    )
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = a_client.wrap_bio(c_in, c_out, server_side=False, server_hostname=SNI)
    server = b.front_server_context.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for side, obj in (("client", client), ("server", server)):
            if not done[side]:
                with contextlib.suppress(ssl.SSLWantReadError):
                    obj.do_handshake()
                    done[side] = True
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            break
    cipher = server.cipher()
    return {"version": server.version(), "cipher": cipher[0] if cipher else None}


def _haproxy_tls(log: Path) -> dict[str, str | None]:
    """The TLS version and cipher HAProxy B logged for the chain's connections."""
    seen: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in log.read_text(errors="replace").splitlines():
            _, _, ssl_part = line.partition(" ssl=")
            if ssl_part and ssl_part != "-/-":
                seen[ssl_part] = seen.get(ssl_part, 0) + 1
    if not seen:
        return {"version": None, "cipher": None}
    version, _, cipher = max(seen, key=lambda k: seen[k]).partition("/")
    return {"version": version, "cipher": cipher}


def _haproxy_sessions(log: Path) -> dict[str, Any]:
    """Sessions one HAProxy logged, by termination state (``--``: normal; ``SD``: the server
    side closed or reset the connection during the data phase, as the iperf3 server does to the
    data connection at the end of a test)."""
    states: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in log.read_text(errors="replace").splitlines():
            _, _, rest = line.partition(" term=")
            if rest:
                state = rest.split()[0]
                states[state] = states.get(state, 0) + 1
    return {"sessions": sum(states.values()), "termination_states": states}


def _final_stats(root: Path) -> dict[str, Any]:
    """Each meshgate proxy's ``Stats.snapshot()``, written when it exited."""
    stats: dict[str, Any] = {}
    for hop in HOPS:
        path = root / f"meshgate-{hop}.stats.json"
        try:
            stats[hop] = json.loads(path.read_text())
        except (OSError, ValueError):
            stats[hop] = None
    return stats
