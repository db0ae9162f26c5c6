"""The control path down to proxies: a global write until every proxy in every zone applied it.

A real global CP with N services; Z zones of which R run a real zone CP (``meshgate zone-cp
run``) and Z - R are simulated as in the ``sync`` scenario; P simulated local proxies
(``bench.proxies_sim``) spread over the R real zone CPs, speaking the real proxy protocol. The
proxies live in a few worker processes (``bench.proxies_worker``); this process runs the
operator, the simulated zones and the polling of the zone CPs.

Figures: a new zone's and a new proxy's full sync, the time until all zones and all proxies
hold the snapshot, the propagation of single writes (global CP → zones → proxies, and the zone
CP → proxies hop alone), memory per connected zone (global CP) and per connected proxy (zone
CP), and CPU per write of every process, this benchmark's own included (it shares the machine).

The write every proxy must receive: a local proxy's configuration holds a ``Cluster/<service>``
for every ``Service`` of the mesh (``zone_cp.proxies.configgen.local_proxy``), whose
``protocol`` is the Service's first port's. Each write changes one Service (never the same one
twice in a run) from ``http`` to ``tcp`` and gives it a port number of its own: zones match the
write by key and port, proxies by key and protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from bench.harness import (
    REPO,
    CpuMeter,
    Owned,
    Profiler,
    Summary,
    cpu_seconds,
    machine_info,
    median,
    ms,
    peak_rss_bytes,
    poll_until,
    rss_bytes,
    summarise_stacks,
    utc_stamp,
    workdir,
    write_results,
)
from bench.proxies_worker import ProxyWorker
from bench.sync_propagation import (
    BATCH,
    FIRST_PORT,
    OperatorApi,
    Probe,
    all_zones_full_sync,
    enroll_zones,
    first_zone_full_sync,
    load_services,
    service,
    service_name,
)
from bench.sync_propagation import Context as SyncContext
from bench.sync_propagation import Params as SyncParams
from tests.support.factories import doc
from tests.support.processes import Admin, GlobalCPProcess, ZoneCPProcess

SCENARIO = "proxies"
WRITE_TIMEOUT = 30.0  # a write not applied everywhere by then is counted as missing
SNAPSHOT_TIMEOUT = 600.0
ENROLL_CONCURRENCY = 8
POLL_INTERVAL = 0.005  # a zone CP's /api/v1/sync while a write is on its way
SETTLE = 1.0  # before reading an RSS, so the allocator can return what a burst freed
NEW_PROTOCOL = "tcp"  # services are loaded as http; each write turns one to tcp


@dataclass(frozen=True)
class Params:
    zones: int = 20  # in all, the real zone CPs included
    proxy_zones: int = 2  # real zone CPs, carrying the proxies between them
    proxies: int = 1_000
    resources: int = 10_000
    writes: int = 100
    rounds: int = 3
    full_sync_repeats: int = 3
    connect_concurrency: int = 10  # proxies taking their first snapshot at once (in all)
    proxy_processes: int = 2  # worker processes carrying the proxies
    pause: float = 0.02
    profile: bool = False
    keep: bool = False
    seed: int = 1
    quick: bool = False
    results_dir: str | None = None

    @classmethod
    def quick_defaults(cls) -> dict[str, int]:
        return {
            "zones": 4,
            "proxies": 50,
            "resources": 1_000,
            "writes": 20,
            "rounds": 1,
            "full_sync_repeats": 1,
        }

    @property
    def simulated_zones(self) -> int:
        return self.zones - self.proxy_zones

    @property
    def total_writes(self) -> int:
        return (self.rounds + self.profile) * self.writes

    def problems(self) -> list[str]:
        found = []
        if self.simulated_zones < 1:
            found.append("--zones must exceed --proxy-zones (at least one simulated zone)")
        if self.proxies < max(self.proxy_zones, self.proxy_processes):
            found.append("--proxies must be at least --proxy-zones and --proxy-processes")
        if self.total_writes > self.resources:
            found.append(
                "each write changes a service of its own: writes x rounds must not exceed --resources"
            )
        if self.total_writes > 65_535 - FIRST_PORT:
            found.append("too many writes: each needs a port number of its own")
        return found


@dataclass(frozen=True)
class ProxyInfo:
    name: str
    zone: str
    worker: int  # index of the worker process carrying it


@dataclass
class ZoneCPRun:
    """One real zone CP and the proxies it carries."""

    process: ZoneCPProcess
    applied_version: int = 0
    proxies: list[ProxyInfo] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.process.zone

    @property
    def pid(self) -> int:
        assert self.process.proc is not None
        return self.process.proc.pid


@dataclass
class Context:
    params: Params
    sync: SyncContext  # the global CP, the operator API and the simulated zones
    http: aiohttp.ClientSession
    zone_cps: list[ZoneCPRun] = field(default_factory=list)
    workers: list[ProxyWorker] = field(default_factory=list)
    proxies: list[ProxyInfo] = field(default_factory=list)

    @property
    def record(self) -> dict[str, Any]:
        return self.sync.record

    @property
    def global_pid(self) -> int:
        return self.sync.pid


def run(params: Params) -> dict[str, Any]:
    """The whole scenario on uvloop; returns the record written to the results directory."""
    import uvloop

    return uvloop.run(run_async(params))


async def run_async(params: Params) -> dict[str, Any]:
    from bench.proxies_report import render

    stamp = utc_stamp()
    record: dict[str, Any] = {
        "scenario": SCENARIO,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "params": asdict(params),
    }
    _say(f"machine: {record['machine']['cpus']} CPUs, load {record['machine']['loadavg_at_start']}")
    owned = Owned()
    sync_params = SyncParams(
        zones=params.simulated_zones, resources=params.resources, full_sync_repeats=params.full_sync_repeats
    )
    bench_cpu = time.process_time()
    with workdir(SCENARIO, keep=params.keep) as root:
        sync = SyncContext(sync_params, root, owned, stamp, record=record)
        ctx = Context(params, sync, aiohttp.ClientSession())
        try:
            await _scenario(ctx)
        except BaseException:
            for log in sorted(root.rglob("*.log")):
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
                print(f"--- {log} (last lines)\n{tail}", file=sys.stderr)
            raise
        finally:
            for worker in ctx.workers:
                await worker.stop()
            for zone in sync.zones:
                with contextlib.suppress(Exception):
                    await zone.close()
            if hasattr(sync, "api"):
                await sync.api.close()
            await ctx.http.close()
            await asyncio.to_thread(owned.stop_all)
    record["bench_cpu_s"] = time.process_time() - bench_cpu
    record["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    markdown = render(record)
    directory = Path(params.results_dir) if params.results_dir else None
    json_path, md_path = write_results(SCENARIO, record, markdown, stamp, directory)
    print(markdown)
    print(f"\nresults: {json_path}\n         {md_path.name}")
    return record


def _say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def _scenario(ctx: Context) -> None:
    p, s, record = ctx.params, ctx.sync, ctx.record
    _say("starting the global CP")
    s.cp = s.owned.add(GlobalCPProcess(s.root / "global"))
    await asyncio.to_thread(s.cp.start, 60)
    s.admin = Admin(s.cp)
    s.api = OperatorApi(s.cp.url, s.cp.token())
    s.probe = Probe(p.simulated_zones)
    await asyncio.sleep(SETTLE)
    global_memory: dict[str, Any] = {"idle_rss_bytes": rss_bytes(s.pid)}
    record["global_memory"] = global_memory

    sims = [f"sim-{i:02d}" for i in range(1, p.simulated_zones + 1)]
    reals = [f"real-{i:02d}" for i in range(1, p.proxy_zones + 1)]
    zone_docs = [doc("Zone", name, {"region": "bench"}) for name in [*sims, *reals]]
    for start in range(0, len(zone_docs), BATCH):
        await s.api.apply(zone_docs[start : start + BATCH])
    _say(f"loading {p.resources} services in batches of {BATCH}")
    record["load"] = await load_services(s)

    _say(f"enrolling {len(sims)} simulated zones")
    record["zone_enrollment"] = await enroll_zones(s, sims)
    await asyncio.sleep(SETTLE)
    global_memory["before_zones_rss_bytes"] = rss_bytes(s.pid)
    _say("full sync of a new (simulated) zone")
    record["full_sync_new_zone"] = await first_zone_full_sync(s)
    if len(sims) > 1:
        _say(f"full sync of the other {len(sims) - 1} simulated zones at once")
        record["full_sync_all_zones"] = await all_zones_full_sync(s)
    await asyncio.sleep(SETTLE)
    global_memory["after_zones_rss_bytes"] = rss_bytes(s.pid)
    global_memory["per_zone_bytes"] = (
        global_memory["after_zones_rss_bytes"] - global_memory["before_zones_rss_bytes"]
    ) / len(sims)

    record["zone_cps"] = {}
    for name in reals:
        _say(f"starting the real zone CP {name} and its full sync")
        record["zone_cps"][name] = await _start_zone_cp(ctx, name)
    global_memory["with_real_zones_rss_bytes"] = rss_bytes(s.pid)

    _say(f"enrolling {p.proxies} simulated proxies ({p.proxy_processes} processes) with the real zone CPs")
    await _start_workers(ctx)
    record["proxy_enrollment"] = await _enroll_proxies(ctx)
    await asyncio.sleep(SETTLE)
    zone_memory: dict[str, dict[str, Any]] = {
        z.name: {"before_proxies_rss_bytes": rss_bytes(z.pid)} for z in ctx.zone_cps
    }
    record["zone_cp_memory"] = zone_memory

    _say("full sync of a new proxy")
    record["full_sync_new_proxy"] = await _first_proxy(ctx)
    # In two halves: the RSS the second half adds is what connected proxies hold, without the
    # high-water mark the first burst of snapshots left in the allocator.
    others = ctx.proxies[1:]
    halves = others[: len(others) // 2], others[len(others) // 2 :]
    record["full_sync_all_proxies"] = []
    for i, half in enumerate(halves):
        _say(f"full sync of {len(half)} more proxies, {p.connect_concurrency} at a time")
        record["full_sync_all_proxies"].append(await _connect_proxies(ctx, half))
        await asyncio.sleep(SETTLE)
        for zone in ctx.zone_cps:
            zone_memory[zone.name][("half" if i == 0 else "after") + "_proxies_rss_bytes"] = rss_bytes(
                zone.pid
            )
    for zone in ctx.zone_cps:
        memory = zone_memory[zone.name]
        second = sum(proxy.zone == zone.name for proxy in halves[1])
        memory["peak_rss_bytes"] = peak_rss_bytes(zone.pid)
        memory["proxies"] = len(zone.proxies)
        memory["per_proxy_bytes"] = (
            memory["after_proxies_rss_bytes"] - memory["before_proxies_rss_bytes"]
        ) / len(zone.proxies)
        memory["second_half_proxies"] = second
        memory["per_proxy_marginal_bytes"] = (
            (memory["after_proxies_rss_bytes"] - memory["half_proxies_rss_bytes"]) / second
            if second
            else math.nan
        )

    rng = random.Random(p.seed)  # noqa: S311 (which services the writes change, not a secret)
    order = iter(rng.sample(range(p.resources), p.total_writes))
    ports = iter(range(FIRST_PORT, 65_536))
    rounds = []
    for r in range(p.rounds):
        _say(f"propagation round {r + 1}/{p.rounds}: {p.writes} writes")
        rounds.append(await _propagation_round(ctx, order, ports))
        last = rounds[-1]
        _say(
            f"  every proxy p50 {ms(last['all_proxies']['p50'])} p99 {ms(last['all_proxies']['p99'])}; "
            f"zone CP → proxies p99 {ms(last['zone_cp_hop']['p99'])}; missing {last['missing_proxies']}"
        )
    record["propagation"] = {"rounds": rounds, **_combine(rounds)}
    await asyncio.sleep(SETTLE)
    for zone in ctx.zone_cps:
        zone_memory[zone.name]["after_propagation_rss_bytes"] = rss_bytes(zone.pid)
    global_memory["after_propagation_rss_bytes"] = rss_bytes(s.pid)
    global_memory["peak_rss_bytes"] = peak_rss_bytes(s.pid)
    record["proxies_seen"] = await _coverage(ctx, sum(r["writes"] for r in rounds))
    if p.profile:
        record["profiles"] = await _profiles(ctx, order, ports)


# --- zone CPs -----------------------------------------------------------------------------------


async def _applied_version(ctx: Context, zone: ZoneCPRun) -> int:
    async with ctx.http.get(f"{zone.process.url}/api/v1/sync") as reply:
        return int((await reply.json())["appliedVersion"])


async def _start_zone_cp(ctx: Context, name: str) -> dict[str, Any]:
    """``meshgate zone-cp run`` from process start until it holds what every simulated zone
    holds (its /api/v1/sync polled every 20 ms)."""
    s = ctx.sync
    target = max(zone.version for zone in s.zones)
    token = await s.api.token("zone", name)
    process = s.owned.add(ZoneCPProcess(s.root / name, name, s.cp.zone_url, token))
    zone = ZoneCPRun(process)
    t0 = time.monotonic()
    await asyncio.to_thread(process.start, 60)
    joined = time.monotonic() - t0

    async def applied() -> int | None:
        if process.proc is not None and process.proc.poll() is not None:
            raise RuntimeError(f"zone CP exited: {process.tail()}")
        version = await _applied_version(ctx, zone)
        return version if version >= target else None

    zone.applied_version = await poll_until(
        applied, interval=0.02, timeout=SNAPSHOT_TIMEOUT, what=f"zone CP {name} applied"
    )
    ctx.zone_cps.append(zone)
    return {
        "seconds_to_joined": joined,
        "seconds_to_applied": time.monotonic() - t0,
        "cpu_s": cpu_seconds(zone.pid),
        "rss_bytes": rss_bytes(zone.pid),
        "proxy_url": process.proxy_url,
    }


# --- proxies ------------------------------------------------------------------------------------


async def _start_workers(ctx: Context) -> None:
    for i in range(ctx.params.proxy_processes):
        ctx.workers.append(await ProxyWorker.start(i, ctx.sync.root / f"proxy-worker-{i}.log", REPO))


def _per_worker(ctx: Context, total: int) -> int:
    return max(1, total // len(ctx.workers))


async def _enroll_proxies(ctx: Context) -> dict[str, Any]:
    """P proxies, round robin over the real zone CPs (and over the workers), each with a
    single-use join token from the operator API (made first, as Terraform would) and the real
    enrollment (ENROLL_CONCURRENCY at a time in all)."""
    p = ctx.params
    specs: dict[int, list[dict[str, str]]] = {}
    for i in range(p.proxies):
        zone = ctx.zone_cps[i % len(ctx.zone_cps)]
        info = ProxyInfo(f"proxy-{i:04d}", zone.name, i % len(ctx.workers))
        zone.proxies.append(info)
        ctx.proxies.append(info)
        specs.setdefault(info.worker, []).append(
            {
                "name": info.name,
                "zone": zone.name,
                "url": zone.process.proxy_url,
                "service": service_name(i % p.resources),
            }
        )
    for worker in ctx.workers:
        await worker.call("add", proxies=specs.get(worker.index, []))
    gate = asyncio.Semaphore(ENROLL_CONCURRENCY)

    async def token(info: ProxyInfo) -> tuple[ProxyInfo, str]:
        async with gate:
            return info, await ctx.sync.api.token("proxy", info.zone)

    tokens: dict[int, dict[str, str]] = {}
    for info, value in await asyncio.gather(*(token(info) for info in ctx.proxies)):
        tokens.setdefault(info.worker, {})[info.name] = value
    meters = {zone.name: CpuMeter(zone.pid).start() for zone in ctx.zone_cps}
    started = time.monotonic()
    replies = await asyncio.gather(*(
        w.call("enroll", tokens=tokens.get(w.index, {}), concurrency=_per_worker(ctx, ENROLL_CONCURRENCY))
        for w in ctx.workers
    ))  # fmt: skip
    took = [seconds for reply in replies for seconds in reply["seconds"].values()]
    return {
        "proxies": p.proxies,
        "concurrency": ENROLL_CONCURRENCY,
        "seconds": time.monotonic() - started,
        "per_proxy_s": Summary.of(took).as_dict(),
        "zone_cp_cpu_s": {name: meter.stop() for name, meter in meters.items()},
    }


def _zone_of(ctx: Context, proxy: ProxyInfo) -> ZoneCPRun:
    return next(zone for zone in ctx.zone_cps if zone.name == proxy.zone)


async def _first_proxy(ctx: Context) -> dict[str, Any]:
    """The first proxy's full sync, alone, repeated (close, reconnect with an empty hello)."""
    proxy = ctx.proxies[0]
    zone, worker = _zone_of(ctx, proxy), ctx.workers[proxy.worker]
    runs = []
    for i in range(ctx.params.full_sync_repeats):
        if i:
            await worker.call("close", names=[proxy.name])
            await asyncio.sleep(0.5)
        cpu = CpuMeter(zone.pid).start()
        reply = await worker.call("connect", names=[proxy.name], concurrency=1, timeout=SNAPSHOT_TIMEOUT)
        figures = reply["snapshots"][proxy.name]
        runs.append({**figures, "zone_cp_cpu_s": cpu.stop(), "worker_cpu_s": reply["cpu_s"]})
    return {
        "zone": zone.name,
        "runs": runs,
        "median_total_s": median([r["total_s"] for r in runs]),
        "median_zone_cp_cpu_s": median([r["zone_cp_cpu_s"] for r in runs]),
        "median_worker_cpu_s": median([r["worker_cpu_s"] for r in runs]),
    }


async def _connect_proxies(ctx: Context, proxies: Sequence[ProxyInfo]) -> dict[str, Any]:
    """``proxies`` connect, ``connect_concurrency`` at a time (in all); until all hold the
    snapshot."""
    meters = {zone.name: CpuMeter(zone.pid).start() for zone in ctx.zone_cps}
    workers_cpu = [CpuMeter(w.pid).start() for w in ctx.workers]
    bench_cpu = time.process_time()
    started = time.monotonic()
    replies = await asyncio.gather(*(
        w.call("connect", names=[i.name for i in proxies if i.worker == w.index],
               concurrency=_per_worker(ctx, ctx.params.connect_concurrency), timeout=SNAPSHOT_TIMEOUT)
        for w in ctx.workers
    ))  # fmt: skip
    ended = time.monotonic()
    snapshots = [figures for reply in replies for figures in reply["snapshots"].values()]
    return {
        "proxies_connected": len(proxies),
        "concurrency": ctx.params.connect_concurrency,
        "all_hold_snapshot_s": ended - started,
        "per_proxy_total_s": Summary.of([f["total_s"] for f in snapshots]).as_dict(),
        "per_proxy_wait_first_frame_s": Summary.of([f["wait_first_frame_s"] for f in snapshots]).as_dict(),
        "resources_per_snapshot": sorted({f["resources"] for f in snapshots}),
        "zone_cp_cpu_s": {name: meter.stop() for name, meter in meters.items()},
        "workers_cpu_s": sum(meter.stop() for meter in workers_cpu),
        "bench_cpu_s": time.process_time() - bench_cpu,
    }


# --- propagation --------------------------------------------------------------------------------


async def _applied_after(ctx: Context, zone: ZoneCPRun, t0: float) -> float:
    """Seconds from ``t0`` until the zone CP's applied version passes the one it held (NaN:
    not within WRITE_TIMEOUT). Polled every POLL_INTERVAL, so up to that much late."""
    before = zone.applied_version
    while time.monotonic() - t0 < WRITE_TIMEOUT:
        version = await _applied_version(ctx, zone)
        if version > before:
            zone.applied_version = version
            return time.monotonic() - t0
        await asyncio.sleep(POLL_INTERVAL)
    return math.nan


@dataclass
class _Samples:
    every_proxy: list[float] = field(default_factory=list)  # per write: the last proxy
    everywhere: list[float] = field(default_factory=list)  # per write: the last proxy or zone
    per_proxy: list[float] = field(default_factory=list)
    per_sim_zone: list[float] = field(default_factory=list)
    api_reply: list[float] = field(default_factory=list)
    hop: list[float] = field(default_factory=list)  # zone CP applied -> its last proxy, all zones
    by_zone: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def zone(self, name: str) -> dict[str, list[float]]:
        return self.by_zone.setdefault(name, {"applied": [], "last_proxy": [], "hop": []})


async def _propagation_round(ctx: Context, order: Iterator[int], ports: Iterator[int]) -> dict[str, Any]:
    p, s = ctx.params, ctx.sync
    samples = _Samples()
    missing_proxies = missing_zones = 0
    global_cpu = CpuMeter(s.pid).start()
    zone_cpu = {zone.name: CpuMeter(zone.pid).start() for zone in ctx.zone_cps}
    workers_cpu = [CpuMeter(w.pid).start() for w in ctx.workers]
    bench_cpu = time.process_time()
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    for _ in range(p.writes):
        name = service_name(next(order))
        port = next(ports)
        s.probe.arm(f"Service/{name}", port)
        await asyncio.gather(*(w.arm(f"Cluster/{name}", NEW_PROTOCOL) for w in ctx.workers))
        t0 = time.monotonic()
        watchers = [asyncio.create_task(_applied_after(ctx, zone, t0)) for zone in ctx.zone_cps]
        await s.api.apply([service(name, port, NEW_PROTOCOL)])
        samples.api_reply.append(time.monotonic() - t0)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(WRITE_TIMEOUT):
                await s.probe.done.wait()
                for worker in ctx.workers:
                    await worker.done.wait()
        zone_applied = await asyncio.gather(*watchers)
        hits = {
            k: v
            for each in await asyncio.gather(*(w.collect() for w in ctx.workers))
            for k, v in each.items()
        }
        zone_hits = dict(s.probe.hits)
        s.probe.disarm()
        missing_proxies += p.proxies - len(hits)
        missing_zones += p.simulated_zones - len(zone_hits)
        samples.per_proxy.extend(at - t0 for at in hits.values())
        samples.per_sim_zone.extend(at - t0 for at in zone_hits.values())
        if len(hits) == p.proxies:
            samples.every_proxy.append(max(hits.values()) - t0)
            if len(zone_hits) == p.simulated_zones:
                samples.everywhere.append(max([*hits.values(), *zone_hits.values()]) - t0)
        for zone, applied in zip(ctx.zone_cps, zone_applied, strict=True):
            times = [hits[proxy.name] for proxy in zone.proxies if proxy.name in hits]
            if math.isnan(applied) or len(times) < len(zone.proxies):
                continue
            by = samples.zone(zone.name)
            by["applied"].append(applied)
            by["last_proxy"].append(max(times) - t0)
            by["hop"].append(max(times) - t0 - applied)
            samples.hop.append(max(times) - t0 - applied)
        await asyncio.sleep(p.pause)
    wall = time.monotonic() - started
    used = global_cpu.stop()
    zone_used = {name: meter.stop() for name, meter in zone_cpu.items()}
    bench_used = time.process_time() - bench_cpu
    workers_used = sum(meter.stop() for meter in workers_cpu)
    return {
        "writes": p.writes,
        "missing_proxies": missing_proxies,
        "missing_zones": missing_zones,
        "all_proxies": Summary.of(samples.every_proxy).as_dict(),
        "everywhere": Summary.of(samples.everywhere).as_dict(),
        "per_proxy": Summary.of(samples.per_proxy).as_dict(),
        "per_sim_zone": Summary.of(samples.per_sim_zone).as_dict(),
        "zone_cp_hop": Summary.of(samples.hop).as_dict(),
        "by_zone_cp": {
            name: {k: Summary.of(v).as_dict() for k, v in by.items()} for name, by in samples.by_zone.items()
        },
        "api_reply": Summary.of(samples.api_reply).as_dict(),
        "wall_s": wall,
        "global_cpu_s": used,
        "global_cpu_ms_per_write": 1000 * used / p.writes,
        "zone_cp_cpu_s": zone_used,
        "zone_cp_cpu_ms_per_write": {name: 1000 * v / p.writes for name, v in zone_used.items()},
        "bench_cpu_s": bench_used,
        "bench_cpu_ms_per_write": 1000 * bench_used / p.writes,
        "workers_cpu_s": workers_used,
        "workers_cpu_ms_per_write": 1000 * workers_used / p.writes,
        "loadavg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "raw_all_proxies_s": samples.every_proxy,
        "raw_everywhere_s": samples.everywhere,
        "raw_zone_cp_hop_s": samples.hop,
    }


def _combine(rounds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    def of_rounds(section: str, stat: str) -> float:
        return median([r[section][stat] for r in rounds])

    sections = ("all_proxies", "everywhere", "per_proxy", "per_sim_zone", "zone_cp_hop")
    return {
        "median_of_rounds": {
            **{f"{sec}_{stat}": of_rounds(sec, stat) for sec in sections for stat in ("p50", "p99", "max")},
            "global_cpu_ms_per_write": median([r["global_cpu_ms_per_write"] for r in rounds]),
            "bench_cpu_ms_per_write": median([r["bench_cpu_ms_per_write"] for r in rounds]),
            "workers_cpu_ms_per_write": median([r["workers_cpu_ms_per_write"] for r in rounds]),
            "zone_cp_cpu_ms_per_write": {
                name: median([r["zone_cp_cpu_ms_per_write"][name] for r in rounds])
                for name in rounds[0]["zone_cp_cpu_ms_per_write"]
            },
        },
        "pooled": {
            "all_proxies": Summary.of([x for r in rounds for x in r["raw_all_proxies_s"]]).as_dict(),
            "everywhere": Summary.of([x for r in rounds for x in r["raw_everywhere_s"]]).as_dict(),
            "zone_cp_hop": Summary.of([x for r in rounds for x in r["raw_zone_cp_hop_s"]]).as_dict(),
        },
        "missing_proxies": sum(r["missing_proxies"] for r in rounds),
        "missing_zones": sum(r["missing_zones"] for r in rounds),
    }


async def _coverage(ctx: Context, writes: int) -> dict[str, Any]:
    """How many of the measured writes each proxy applied, and what its snapshot held."""
    states = await asyncio.gather(*(w.call("state") for w in ctx.workers))
    applied = [n for state in states for n in state["writes_applied"].values()]
    snapshots = {n for state in states for n in state["snapshot_resources"].values()}
    failed = {name: error for state in states for name, error in state["failed"].items()}
    return {
        "writes": writes,
        "proxies": len(applied),
        "proxies_with_every_write": sum(n == writes for n in applied),
        "fewest_writes_applied": min(applied, default=0),
        "snapshot_resources": sorted(snapshots),
        "failed": failed,
    }


# --- profiles -----------------------------------------------------------------------------------


async def _profiles(ctx: Context, order: Iterator[int], ports: Iterator[int]) -> dict[str, Any]:
    """Extra phases under py-spy (slowed by sampling: their timings are not results): the first
    real zone CP during a new proxy's full sync and during a propagation round (the first proxy
    worker beside it)."""
    from bench.harness import RESULTS_DIR

    if not Profiler.available():
        _say("--profile: py-spy is not installed (pip install py-spy); skipping profiles")
        return {"skipped": "py-spy not installed"}
    base = Path(ctx.params.results_dir) if ctx.params.results_dir else RESULTS_DIR
    out = base / f"{ctx.sync.stamp}-{SCENARIO}-profile"
    zone = ctx.zone_cps[0]
    profiles: dict[str, Any] = {}

    _say(f"profile: zone CP {zone.name} during a new proxy's full sync (x{ctx.params.full_sync_repeats})")
    profiler = await asyncio.to_thread(Profiler(zone.pid, out / "zone-cp-proxy-full-sync.txt").start)
    proxy = zone.proxies[0]
    worker = ctx.workers[proxy.worker]
    for _ in range(ctx.params.full_sync_repeats):
        await worker.call("close", names=[proxy.name])
        await worker.call("connect", names=[proxy.name], concurrency=1, timeout=SNAPSHOT_TIMEOUT)
    await asyncio.to_thread(profiler.stop)
    profiles["zone_cp_proxy_full_sync"] = {"file": profiler.out, **profiler.summary()}

    _say(f"profile: zone CP {zone.name} and proxy worker 0 during a propagation round")
    during = [
        Profiler(zone.pid, out / "zone-cp-propagation.txt"),
        Profiler(ctx.workers[0].pid, out / "worker-propagation.txt"),
    ]
    for each in during:
        await asyncio.to_thread(each.start)
    extra = await _propagation_round(ctx, order, ports)
    for each in during:
        await asyncio.to_thread(each.stop)
    profiles["zone_cp_propagation"] = {
        "file": during[0].out,
        "round_under_profiler": {
            k: extra[k] for k in ("all_proxies", "zone_cp_hop", "zone_cp_cpu_ms_per_write")
        },
        **during[0].summary(),
    }
    plumbing = worker_plumbing()
    profiles["worker_propagation"] = {
        "file": during[1].out,
        **summarise_stacks(during[1].out, plumbing=plumbing),
    }
    return profiles


def worker_plumbing() -> tuple[str, ...]:
    """The worker's entry frames (py-spy names the file as given: relative to the repository, or
    absolute), so that samples of its idle event loop count as the event loop's."""
    paths = ("bench/proxies_worker.py", str(Path(__file__).with_name("proxies_worker.py")))
    return tuple(f"{function} ({path}:" for path in paths for function in ("main", "<module>"))
