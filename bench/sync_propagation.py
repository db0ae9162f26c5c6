"""The control path: a real global CP with N resources and Z zones that speak the real protocol.

Figures: a new zone's full sync (simulated zones, then a real zone CP that persists to
SQLite), the time until all Z zones hold the snapshot, the global CP's memory per connected
zone, and the propagation latency of single writes to every zone over several rounds.

The simulated zones live in this process, on one event loop: each enrolls through the real
enrollment endpoint (``zone_cp.enrollment.enroll``) and opens the real streams with its own
mTLS client certificate; its sink applies updates to memory only and notes when.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from bench.harness import (
    RESULTS_DIR,
    CpuMeter,
    Owned,
    Profiler,
    Summary,
    cpu_seconds,
    kib,
    machine_info,
    markdown_table,
    median,
    mib,
    ms,
    peak_rss_bytes,
    poll_until,
    rss_bytes,
    secs,
    utc_stamp,
    workdir,
    write_results,
)
from meshgate.sync.messages import MAX_MESSAGE_BYTES, Hello, Upsert
from meshgate.sync.sink import Change, SinkSession
from meshgate.sync.source import Entry, SourceSession
from meshgate.sync.websocket import run_sink, run_source
from tests.support.factories import doc
from tests.support.processes import Admin, GlobalCPProcess, ZoneCPProcess
from zone_cp.enrollment import enroll
from zone_cp.identity import ZoneIdentity

SCENARIO = "sync"
BATCH = 127  # the store's atomic limit for one apply (128 operations less the fence)
FIRST_PORT = 20_000  # writes set ports from here up, so every write's content is new
WRITE_TIMEOUT = 30.0  # a write not applied everywhere by then is counted as missing
SNAPSHOT_TIMEOUT = 600.0
STOP_TIMEOUT = 10.0  # for a zone CP to exit after SIGTERM


@dataclass(frozen=True)
class Params:
    zones: int = 20
    resources: int = 10_000
    writes: int = 200
    rounds: int = 3
    full_sync_repeats: int = 3
    real_zone_writes: int = 30
    pause: float = 0.02
    real_zone: bool = True
    profile: bool = False
    keep: bool = False
    seed: int = 1
    quick: bool = False

    @classmethod
    def quick_defaults(cls) -> dict[str, int]:
        return {"zones": 5, "resources": 1_000, "writes": 50, "real_zone_writes": 10}


# --- simulated zones --------------------------------------------------------------------------------


class TimedSocket:
    """A client WebSocket that notes when frames arrive (while ``recording``) and answers leave."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, zone: SimZone) -> None:
        self._ws, self._zone = ws, zone
        self.recording = True
        self.frames: list[tuple[float, int]] = []  # (arrival, characters)

    async def send_str(self, data: str, compress: int | None = None) -> None:
        await self._ws.send_str(data, compress)
        self._zone.sent()

    async def receive(self, timeout: float | None = None) -> aiohttp.WSMessage:
        message = await self._ws.receive(timeout)
        if self.recording and message.type == aiohttp.WSMsgType.TEXT:
            self.frames.append((time.monotonic(), len(message.data)))
        return message

    async def close(self, *, code: int = 1000, message: bytes = b"") -> bool:
        return await self._ws.close(code=code, message=message)

    @property
    def closed(self) -> bool:
        return self._ws.closed


@dataclass
class Probe:
    """The write being measured: its key and new port, and when each zone applied it."""

    zones: int
    key: str = ""
    port: int = -1
    hits: dict[str, float] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def arm(self, key: str, port: int) -> None:
        self.key, self.port = key, port
        self.hits = {}
        self.done.clear()

    def disarm(self) -> None:
        self.key, self.port = "", -1

    def seen(self, zone: str, upserts: Iterable[Upsert], at: float) -> None:
        if not self.key or zone in self.hits:
            return
        for upsert in upserts:
            if upsert.key == self.key and _first_port(upsert.doc) == self.port:
                self.hits[zone] = at
                if len(self.hits) >= self.zones:
                    self.done.set()
                return


def _first_port(document: dict[str, Any]) -> int | None:
    with contextlib.suppress(KeyError, IndexError, TypeError):
        return int(document["spec"]["ports"][0]["port"])
    return None


class _NothingToReport:
    """The zone→global view of a zone with no dataplanes, ingresses or edges."""

    version = 0

    def entry(self, key: str) -> Entry | None:
        return None

    def keys(self) -> Iterable[str]:
        return ()


@dataclass
class Snapshot:
    """One full sync as the sink saw it (monotonic times)."""

    opened: float
    connected: float = math.nan
    first_frame: float = math.nan
    last_frame: float = math.nan
    applied: float = math.nan
    acked: float = math.nan
    parts: int = 0
    characters: int = 0
    resources: int = 0

    def figures(self) -> dict[str, float | int]:
        return {
            "total_s": self.acked - self.opened,
            "connect_s": self.connected - self.opened,
            "wait_first_frame_s": self.first_frame - self.connected,
            "transfer_s": self.last_frame - self.first_frame,
            "check_and_apply_s": self.acked - self.last_frame,
            "parts": self.parts,
            "megabytes": round(self.characters / 1e6, 2),
            "resources": self.resources,
        }


class SimZone:
    """A zone CP reduced to its protocol: both streams, a sink that applies to memory."""

    def __init__(self, name: str, identity: ZoneIdentity, url: str, probe: Probe) -> None:
        self.name, self.identity, self.url, self.probe = name, identity, url, probe
        self.version = 0
        self.snapshot: Snapshot | None = None
        self.has_snapshot = asyncio.Event()
        self.failed = asyncio.Event()
        self.error = ""
        self._socket: TimedSocket | None = None
        self._awaiting_ack = False
        self._http: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def connect(self) -> None:
        """Open both streams with an empty hello (a first connection); returns at once."""
        await self.close()
        self.has_snapshot.clear()
        self.failed.clear()
        self._awaiting_ack = False
        self.error = ""
        self._http = aiohttp.ClientSession()
        contexts = self.identity.client_ssl(), self.identity.client_ssl()
        self.snapshot = Snapshot(opened=time.monotonic())
        self._tasks = [
            asyncio.create_task(self._guard(self._to_zone(contexts[0])), name=f"{self.name}-to-zone"),
            asyncio.create_task(self._guard(self._from_zone(contexts[1])), name=f"{self.name}-from-zone"),
        ]

    async def close(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _guard(self, stream: Any) -> None:
        try:
            await stream
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            self.failed.set()

    async def _connect(self, stream: str, context: Any) -> aiohttp.ClientWebSocketResponse:
        assert self._http is not None
        return await self._http.ws_connect(
            f"{self.url}/sync/v1/{stream}", ssl=context, heartbeat=10.0, max_msg_size=MAX_MESSAGE_BYTES
        )

    async def _to_zone(self, context: Any) -> None:
        ws = await self._connect("global-to-zone", context)
        async with ws:
            assert self.snapshot is not None
            self.snapshot.connected = time.monotonic()
            self._socket = TimedSocket(ws, self)
            await run_sink(self._socket, SinkSession(self._apply), Hello({}, 0))
        raise ConnectionError("the global→zone stream ended")

    async def _from_zone(self, context: Any) -> None:
        ws = await self._connect("zone-to-global", context)
        async with ws:
            await run_source(ws, SourceSession(_NothingToReport(), time.monotonic), asyncio.Event())

    async def _apply(self, change: Change) -> None:
        at = time.monotonic()
        self.version = change.version
        if self.has_snapshot.is_set() or self._awaiting_ack:
            self.probe.seen(self.name, change.upserts, at)
            return
        assert self.snapshot is not None
        assert self._socket is not None
        self._socket.recording = False
        frames = self._socket.frames
        self.snapshot.first_frame, self.snapshot.last_frame = frames[0][0], frames[-1][0]
        self.snapshot.parts = len(frames)
        self.snapshot.characters = sum(size for _, size in frames)
        self.snapshot.resources = len(change.upserts)
        self.snapshot.applied = at
        self._awaiting_ack = True

    def sent(self) -> None:
        """Called after each message this zone sends on the global→zone stream."""
        if self._awaiting_ack:
            self._awaiting_ack = False
            assert self.snapshot is not None
            self.snapshot.acked = time.monotonic()
            self.has_snapshot.set()

    async def wait_snapshot(self, timeout: float) -> Snapshot:
        done, _ = await asyncio.wait(
            [asyncio.create_task(self.has_snapshot.wait()), asyncio.create_task(self.failed.wait())],
            timeout=timeout,
            return_when=asyncio.FIRST_COMPLETED,
        )
        for task in done:
            task.cancel()
        if not self.has_snapshot.is_set():
            raise RuntimeError(f"zone {self.name}: no snapshot ({self.error or 'timed out'})")
        assert self.snapshot is not None
        return self.snapshot


# --- the operator --------------------------------------------------------------------------------


class OperatorApi:
    """The global CP's operator API from this event loop (writes must not block the zones)."""

    def __init__(self, url: str, token: str) -> None:
        self._url = url
        self._http = aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"})

    async def apply(self, docs: Sequence[dict[str, Any]]) -> dict[str, Any]:
        body = {"kind": "List", "items": list(docs)}
        async with self._http.post(f"{self._url}/api/v1/apply", json=body) as response:
            reply: dict[str, Any] = await response.json()
            if response.status != 200:
                raise RuntimeError(f"apply refused ({response.status}): {reply}")
            return reply

    async def token(self, role: str, zone: str, ttl: str = "2h") -> str:
        """A single-use join token (``POST /api/v1/tokens``, as ``meshgate token create``)."""
        body = {"role": role, "zone": zone, "ttl": ttl, "reusable": False}
        async with self._http.post(f"{self._url}/api/v1/tokens", json=body) as response:
            reply: dict[str, Any] = await response.json()
            if response.status != 201:
                raise RuntimeError(f"token refused ({response.status}): {reply}")
            return str(reply["token"])

    async def close(self) -> None:
        await self._http.close()


def service(name: str, port: int, protocol: str = "http") -> dict[str, Any]:
    return doc("Service", name, {"ports": [{"name": "main", "port": port, "protocol": protocol}]})


def service_name(i: int) -> str:
    return f"svc-{i:05d}"


# --- the scenario ----------------------------------------------------------------------------------


@dataclass
class Context:
    params: Params
    root: Path
    owned: Owned
    stamp: str
    cp: GlobalCPProcess = field(init=False)
    admin: Admin = field(init=False)
    api: OperatorApi = field(init=False)
    probe: Probe = field(init=False)
    zones: list[SimZone] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        assert self.cp.proc is not None
        return self.cp.proc.pid


async def run(params: Params) -> dict[str, Any]:
    """The whole scenario; returns the record that was written to bench/results."""
    stamp = utc_stamp()
    record: dict[str, Any] = {
        "scenario": SCENARIO,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "params": asdict(params),
    }
    _say(f"machine: {record['machine']['cpus']} CPUs, load {record['machine']['loadavg_at_start']}")
    owned = Owned()
    with workdir(SCENARIO, keep=params.keep) as root:
        ctx = Context(params, root, owned, stamp, record=record)
        try:
            await _scenario(ctx)
        except BaseException:
            for log in sorted(root.rglob("*.log")):
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
                print(f"--- {log} (last lines)\n{tail}", file=sys.stderr)
            raise
        finally:
            for zone in ctx.zones:
                with contextlib.suppress(Exception):
                    await zone.close()
            if hasattr(ctx, "api"):
                await ctx.api.close()
            await asyncio.to_thread(owned.stop_all)
    markdown = render(record)
    json_path, md_path = write_results(SCENARIO, record, markdown, stamp)
    print(markdown)
    print(
        f"\nresults: {json_path.relative_to(Path.cwd()) if json_path.is_relative_to(Path.cwd()) else json_path}"
    )
    print(f"         {md_path.name}")
    return record


def _say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def _scenario(ctx: Context) -> None:
    p, record = ctx.params, ctx.record
    _say("starting the global CP")
    ctx.cp = ctx.owned.add(GlobalCPProcess(ctx.root / "global"))
    await asyncio.to_thread(ctx.cp.start, 60)
    ctx.admin = Admin(ctx.cp)
    ctx.api = OperatorApi(ctx.cp.url, ctx.cp.token())
    ctx.probe = Probe(p.zones)
    await asyncio.sleep(1.0)
    memory: dict[str, Any] = {"idle_rss_bytes": rss_bytes(ctx.pid)}
    record["memory"] = memory

    sims = [f"sim-{i:02d}" for i in range(1, p.zones + 1)]
    zone_docs = [doc("Zone", name, {"region": "bench"}) for name in [*sims, "real-01", "real-02"]]
    for start in range(0, len(zone_docs), BATCH):
        await ctx.api.apply(zone_docs[start : start + BATCH])

    _say(f"loading {p.resources} services in batches of {BATCH}")
    record["load"] = await load_services(ctx)
    await asyncio.sleep(1.0)
    memory["loaded_rss_bytes"] = rss_bytes(ctx.pid)

    _say(f"enrolling {p.zones} simulated zones")
    record["enrollment"] = await enroll_zones(ctx, sims)

    memory["before_zones_rss_bytes"] = rss_bytes(ctx.pid)
    _say("full sync of the first zone")
    record["full_sync_first_zone"] = await first_zone_full_sync(ctx)
    _say(f"full sync of the other {p.zones - 1} zones at once")
    record["full_sync_all_zones"] = await all_zones_full_sync(ctx)
    await asyncio.sleep(1.0)
    memory["after_zones_rss_bytes"] = rss_bytes(ctx.pid)
    memory["peak_rss_bytes"] = peak_rss_bytes(ctx.pid)
    memory["per_zone_bytes"] = (memory["after_zones_rss_bytes"] - memory["before_zones_rss_bytes"]) / p.zones

    rng = random.Random(p.seed)  # noqa: S311 (which service each write changes, not a secret)
    counter = iter(range(FIRST_PORT, 65_536))
    rounds = []
    for r in range(p.rounds):
        _say(f"propagation round {r + 1}/{p.rounds}: {p.writes} writes")
        rounds.append(await _propagation_round(ctx, rng, counter))
        _say(
            f"  per zone p50 {ms(rounds[-1]['per_zone']['p50'])} p99 {ms(rounds[-1]['per_zone']['p99'])}, "
            f"slowest zone p99 {ms(rounds[-1]['slowest_zone']['p99'])}"
        )
    record["propagation"] = {"rounds": rounds, **_combine(rounds)}
    memory["after_propagation_rss_bytes"] = rss_bytes(ctx.pid)

    if p.real_zone:
        _say("full sync of a real zone CP (SQLite)")
        record["full_sync_real_zone"] = await _real_zone(ctx, "real-01", (rng, counter))
    if p.profile:
        record["profiles"] = await _profiles(ctx, rng, counter)


async def load_services(ctx: Context) -> dict[str, Any]:
    n = ctx.params.resources
    started = time.monotonic()
    cpu = CpuMeter(ctx.pid).start()
    revision = 0
    for start in range(0, n, BATCH):
        reply = await ctx.api.apply(
            [service(service_name(i), 8080) for i in range(start, min(n, start + BATCH))]
        )
        revision = int(reply["resourceVersion"])
    seconds = time.monotonic() - started
    return {
        "resources": n,
        "requests": math.ceil(n / BATCH),
        "seconds": seconds,
        "resources_per_second": n / seconds if seconds else math.nan,
        "global_cpu_s": cpu.stop(),
        "revision": revision,
    }


async def enroll_zones(ctx: Context, names: Sequence[str]) -> dict[str, Any]:
    took = []
    for name in names:
        token = await asyncio.to_thread(ctx.admin.token, "zone", name)
        started = time.monotonic()
        identity = await enroll(ctx.cp.zone_url, name, token, now=datetime.now(UTC), ttl=timedelta(hours=24))
        took.append(time.monotonic() - started)
        ctx.zones.append(SimZone(name, identity, ctx.cp.zone_url, ctx.probe))
    return {"zones": len(names), "seconds": Summary.of(took).as_dict()}


async def first_zone_full_sync(ctx: Context) -> dict[str, Any]:
    """The first zone's full sync, repeated (close, reconnect with an empty hello); the last stays."""
    zone = ctx.zones[0]
    runs = []
    for i in range(ctx.params.full_sync_repeats):
        if i:
            await zone.close()
            await asyncio.sleep(0.5)
        cpu = CpuMeter(ctx.pid).start()
        await zone.connect()
        snapshot = await zone.wait_snapshot(SNAPSHOT_TIMEOUT)
        runs.append({**snapshot.figures(), "global_cpu_s": cpu.stop()})
    return {
        "runs": runs,
        "median_total_s": median([r["total_s"] for r in runs]),
        "median_global_cpu_s": median([r["global_cpu_s"] for r in runs]),
    }


async def all_zones_full_sync(ctx: Context) -> dict[str, Any]:
    others = ctx.zones[1:]
    cpu = CpuMeter(ctx.pid).start()
    started = time.monotonic()
    for zone in others:
        await zone.connect()
    snapshots = [await zone.wait_snapshot(SNAPSHOT_TIMEOUT) for zone in others]
    ended = max((s.acked for s in snapshots), default=started)
    per_zone = [s.acked - s.opened for s in snapshots]
    return {
        "zones_connected_at_once": len(others),
        "all_hold_snapshot_s": ended - started,
        "per_zone_total_s": Summary.of(per_zone).as_dict(),
        "per_zone_wait_first_frame_s": Summary.of([s.first_frame - s.connected for s in snapshots]).as_dict(),
        "global_cpu_s": cpu.stop(),
    }


async def _propagation_round(ctx: Context, rng: random.Random, ports: Iterable[int]) -> dict[str, Any]:
    p, probe = ctx.params, ctx.probe
    port_source = iter(ports)
    per_zone: list[float] = []
    slowest: list[float] = []
    api_reply: list[float] = []
    missing = 0
    cpu = CpuMeter(ctx.pid).start()
    bench_cpu = time.process_time()
    started = time.monotonic()
    for _ in range(p.writes):
        name = service_name(rng.randrange(p.resources))
        port = next(port_source)
        probe.arm(f"Service/{name}", port)
        t0 = time.monotonic()
        await ctx.api.apply([service(name, port)])
        api_reply.append(time.monotonic() - t0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(probe.done.wait(), WRITE_TIMEOUT)
        hits = dict(probe.hits)
        probe.disarm()
        missing += p.zones - len(hits)
        latencies = [at - t0 for at in hits.values()]
        per_zone.extend(latencies)
        if len(hits) == p.zones:
            slowest.append(max(latencies))
        await asyncio.sleep(p.pause)
    wall = time.monotonic() - started
    global_cpu = cpu.stop()
    return {
        "writes": p.writes,
        "samples": len(per_zone),
        "missing": missing,
        "per_zone": Summary.of(per_zone).as_dict(),
        "slowest_zone": Summary.of(slowest).as_dict(),
        "api_reply": Summary.of(api_reply).as_dict(),
        "wall_s": wall,
        "global_cpu_s": global_cpu,
        "global_cpu_ms_per_write": 1000 * global_cpu / p.writes,
        "bench_cpu_s": time.process_time() - bench_cpu,
        "raw_per_zone_s": per_zone,
        "raw_slowest_zone_s": slowest,
    }


def _combine(rounds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    def of_rounds(section: str, stat: str) -> float:
        return median([r[section][stat] for r in rounds])

    pooled = Summary.of([x for r in rounds for x in r["raw_per_zone_s"]])
    pooled_slowest = Summary.of([x for r in rounds for x in r["raw_slowest_zone_s"]])
    return {
        "median_of_rounds": {
            "per_zone_p50": of_rounds("per_zone", "p50"),
            "per_zone_p99": of_rounds("per_zone", "p99"),
            "per_zone_max": of_rounds("per_zone", "max"),
            "slowest_zone_p50": of_rounds("slowest_zone", "p50"),
            "slowest_zone_p99": of_rounds("slowest_zone", "p99"),
            "slowest_zone_max": of_rounds("slowest_zone", "max"),
            "global_cpu_s": median([r["global_cpu_s"] for r in rounds]),
            "global_cpu_ms_per_write": median([r["global_cpu_ms_per_write"] for r in rounds]),
        },
        "pooled": {"per_zone": pooled.as_dict(), "slowest_zone": pooled_slowest.as_dict()},
        "missing": sum(r["missing"] for r in rounds),
    }


async def _real_zone(
    ctx: Context,
    name: str,
    writes: tuple[random.Random, Iterable[int]] | None = None,
    profile_dir: Path | None = None,
) -> dict[str, Any]:
    """``meshgate zone-cp run`` from process start until its /api/v1/sync shows the version
    every simulated zone holds (polled every 20 ms); then its service count is checked and,
    given ``writes``, the propagation of single writes to it is measured."""
    target = max(zone.version for zone in ctx.zones)
    token = await asyncio.to_thread(ctx.admin.token, "zone", name)
    data_dir = ctx.root / (name if profile_dir is None else f"{name}-profiled")
    zcp = ctx.owned.add(ZoneCPProcess(data_dir, name, ctx.cp.zone_url, token))
    cpu = CpuMeter(ctx.pid).start()
    t0 = time.monotonic()
    await asyncio.to_thread(zcp.start, 60, wait_joined=False)
    profiler: Profiler | None = None
    assert zcp.proc is not None
    marks: dict[str, float] = {"listening": time.monotonic() - t0}
    if profile_dir is not None:  # from here on: enrollment and the sync (imports are done)
        profiler = Profiler(zcp.proc.pid, profile_dir / "zone-cp-full-sync.txt")
        await asyncio.to_thread(profiler.start)

    async def applied() -> dict[str, Any] | None:
        if zcp.proc is not None and zcp.proc.poll() is not None:
            raise RuntimeError(f"zone CP exited: {zcp.tail()}")
        try:
            state: dict[str, Any] = await asyncio.to_thread(zcp.sync)
        except OSError:
            return None
        now = time.monotonic() - t0
        marks.setdefault("enrolled", now)
        if state["globalToZone"]["connected"]:
            marks.setdefault("connected", now)
        if state["appliedVersion"] >= target:
            marks["applied"] = now
            return state
        return None

    try:
        await poll_until(applied, interval=0.02, timeout=SNAPSHOT_TIMEOUT, what=f"zone CP {name} applied")
    finally:
        if profiler is not None:
            await asyncio.to_thread(profiler.stop)
    global_cpu = cpu.stop()
    zone_pid = zcp.proc.pid
    result: dict[str, Any] = {
        "target_version": target,
        "seconds_from_process_start": marks,
        "total_s": marks["applied"],
        "zone_cp_cpu_s": cpu_seconds(zone_pid),
        "zone_cp_rss_bytes": rss_bytes(zone_pid),
        "zone_cp_peak_rss_bytes": peak_rss_bytes(zone_pid),
        "global_cpu_s": global_cpu,
    }
    services = await asyncio.to_thread(zcp.names, "services")
    result["services_at_zone"] = len(services)
    if writes is not None and ctx.params.real_zone_writes:
        _say(f"propagation to the real zone CP: {ctx.params.real_zone_writes} writes")
        during: list[Profiler] = []
        if profile_dir is not None:
            during = [
                Profiler(zcp.proc.pid, profile_dir / "zone-cp-writes.txt"),
                Profiler(ctx.pid, profile_dir / "global-writes-with-real-zone.txt"),
            ]
            for each in during:
                await asyncio.to_thread(each.start)
        result["propagation"] = await _real_zone_propagation(ctx, zcp, *writes)
        for each in during:
            await asyncio.to_thread(each.stop)
        if during:
            result["profile_writes"] = {
                "zone_cp": {"file": during[0].out, **during[0].summary()},
                "global_cp": {"file": during[1].out, **during[1].summary()},
            }
    result["exit_after_sigterm_s"] = await asyncio.to_thread(_stop, zcp, STOP_TIMEOUT)
    if profiler is not None:
        result["profile"] = {"file": profiler.out, **profiler.summary()}
    return result


async def _profiles(ctx: Context, rng: random.Random, ports: Iterable[int]) -> dict[str, Any]:
    """Extra phases under py-spy (slowed by sampling: their timings are not results)."""
    if not Profiler.available():
        _say("--profile: py-spy is not installed (pip install py-spy); skipping profiles")
        return {"skipped": "py-spy not installed"}
    out = RESULTS_DIR / f"{ctx.stamp}-{SCENARIO}-profile"
    profiles: dict[str, Any] = {}

    _say("profile: global CP during one zone's full sync")
    profiler = await asyncio.to_thread(Profiler(ctx.pid, out / "global-full-sync.txt").start)
    zone = ctx.zones[0]
    await zone.close()
    await zone.connect()
    await zone.wait_snapshot(SNAPSHOT_TIMEOUT)
    await asyncio.to_thread(profiler.stop)
    profiles["global_full_sync"] = {"file": profiler.out, **profiler.summary()}

    _say("profile: global CP during a propagation round")
    profiler = await asyncio.to_thread(Profiler(ctx.pid, out / "global-propagation.txt").start)
    extra = await _propagation_round(ctx, rng, ports)
    await asyncio.to_thread(profiler.stop)
    profiles["global_propagation"] = {
        "file": profiler.out,
        "round_under_profiler": {k: extra[k] for k in ("per_zone", "slowest_zone", "global_cpu_s")},
        **profiler.summary(),
    }

    if ctx.params.real_zone:
        _say("profile: a real zone CP's full sync")
        profiled = await _real_zone(ctx, "real-02", (rng, ports), profile_dir=out)
        during = profiled.pop("profile_writes", {})
        if during:
            profiles["zone_cp_writes"] = during["zone_cp"]
            profiles["global_writes_with_real_zone"] = during["global_cp"]
        profiles["zone_cp_full_sync"] = profiled.pop("profile", {})
        profiles["zone_cp_full_sync"]["run_under_profiler"] = profiled
    return profiles


async def _real_zone_propagation(
    ctx: Context, zcp: ZoneCPProcess, rng: random.Random, ports: Iterable[int]
) -> dict[str, Any]:
    """Single writes, as in the rounds, timed to the real zone CP: from t0 its /api/v1/sync is
    polled every 5 ms until ``appliedVersion`` passes the version held before the write (only
    the write changes a synced resource, so that is the write, persisted). Also waits for
    every simulated zone, so writes never overlap."""
    p, probe = ctx.params, ctx.probe
    port_source = iter(ports)
    real: list[float] = []
    sims: list[float] = []
    missing = 0
    cpu = CpuMeter(ctx.pid).start()
    zone_cpu = CpuMeter(zcp.proc.pid).start() if zcp.proc is not None else None
    for _ in range(p.real_zone_writes):
        before = max(zone.version for zone in ctx.zones)
        name = service_name(rng.randrange(p.resources))
        probe.arm(f"Service/{name}", next(port_source))
        t0 = time.monotonic()
        watcher = asyncio.create_task(_applied_after(zcp, before, t0))
        await ctx.api.apply([service(name, probe.port)])
        latency = await watcher
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(probe.done.wait(), WRITE_TIMEOUT)
        if math.isnan(latency) or len(probe.hits) < p.zones:
            missing += 1
        else:
            real.append(latency)
            sims.append(max(probe.hits.values()) - t0)
        probe.disarm()
        await asyncio.sleep(p.pause)
    return {
        "writes": p.real_zone_writes,
        "missing": missing,
        "global_cpu_ms_per_write": 1000 * cpu.stop() / p.real_zone_writes,
        "zone_cp_cpu_ms_per_write": 1000 * zone_cpu.stop() / p.real_zone_writes if zone_cpu else math.nan,
        "real_zone": Summary.of(real).as_dict(),
        "slowest_simulated_zone": Summary.of(sims).as_dict(),
        "raw_real_zone_s": real,
    }


async def _applied_after(zcp: ZoneCPProcess, version: int, t0: float) -> float:
    """Seconds from ``t0`` until the zone CP's applied version passes ``version`` (NaN: never)."""
    while time.monotonic() - t0 < WRITE_TIMEOUT:
        state = await asyncio.to_thread(zcp.sync)
        if state["appliedVersion"] > version:
            return time.monotonic() - t0
        await asyncio.sleep(0.005)
    return math.nan


def _stop(zcp: ZoneCPProcess, timeout: float) -> float | None:
    """SIGTERM, then how long the zone CP took to exit (None: it did not, and was killed)."""
    assert zcp.proc is not None
    started = time.monotonic()
    try:
        zcp.stop(timeout)
    except subprocess.TimeoutExpired:
        _say(f"zone CP {zcp.zone} still running {timeout:.0f}s after SIGTERM: killing it")
        zcp.kill()
        return None
    return time.monotonic() - started


# --- the report ---------------------------------------------------------------------------------


def render(record: dict[str, Any]) -> str:
    p = record["params"]
    m = record["machine"]
    n, z = p["resources"], p["zones"]
    rows: list[list[str]] = []

    def row(figure: str, value: str, how: str = "") -> None:
        rows.append([figure, value, how])

    first = record.get("full_sync_first_zone")
    if first:
        totals = ", ".join(secs(r["total_s"]) for r in first["runs"])
        last = first["runs"][-1]
        row(
            f"full sync, new simulated zone ({first['runs'][0]['resources']} resources)",
            secs(first["median_total_s"]),
            f"median of {len(first['runs'])} ({totals}); open → ACK sent",
        )
        row(
            "  of which connect / wait / transfer / check+apply",
            " / ".join(
                secs(last[k]) for k in ("connect_s", "wait_first_frame_s", "transfer_s", "check_and_apply_s")
            ),
            f"last run; {last['parts']} parts, {last['megabytes']} MB",
        )
        row("  global CP CPU per full sync", secs(first["median_global_cpu_s"]), "median")
    every = record.get("full_sync_all_zones")
    if every:
        row(
            f"all {z} zones hold the snapshot",
            secs(every["all_hold_snapshot_s"]),
            f"{every['zones_connected_at_once']} more zones connected at once (4 initial-sync slots)",
        )
        per = every["per_zone_total_s"]
        row("  per zone open → ACK, p50 / max", f"{secs(per['p50'])} / {secs(per['max'])}")
        row("  global CP CPU for those syncs", secs(every["global_cpu_s"]))
    real = record.get("full_sync_real_zone")
    if real:
        marks = real["seconds_from_process_start"]
        row(
            f"full sync, real zone CP ({real['services_at_zone']} services at the zone)",
            secs(real["total_s"]),
            "process start → /api/v1/sync appliedVersion ≥ global's",
        )
        row(
            "  listening / enrolled / connected / applied",
            " / ".join(
                secs(marks.get(k, math.nan)) for k in ("listening", "enrolled", "connected", "applied")
            ),
            "from process start (polled every 20 ms)",
        )
        exit_s = real.get("exit_after_sigterm_s")
        row(
            "  zone CP exit after SIGTERM",
            secs(exit_s) if exit_s is not None else f"none within {STOP_TIMEOUT:.0f} s (killed)",
        )
        row(
            "  zone CP CPU, RSS, peak RSS (when applied)",
            f"{secs(real['zone_cp_cpu_s'])}, {mib(real['zone_cp_rss_bytes'])}, {mib(real['zone_cp_peak_rss_bytes'])}",
        )
        rp = real.get("propagation")
        if rp:
            row(
                "propagation to the real zone CP p50 / p99 / max",
                f"{ms(rp['real_zone']['p50'])} / {ms(rp['real_zone']['p99'])} / {ms(rp['real_zone']['max'])}",
                f"{rp['real_zone']['n']} writes, {rp['missing']} missing; applied+persisted, seen by polling "
                f"every 5 ms; slowest simulated zone p50 {ms(rp['slowest_simulated_zone']['p50'])}",
            )
            row(
                "  CPU per write with the real zone CP connected: global CP / zone CP",
                f"{rp['global_cpu_ms_per_write']:.0f} ms / {rp['zone_cp_cpu_ms_per_write']:.0f} ms",
            )
    prop = record.get("propagation")
    if prop:
        med = prop["median_of_rounds"]
        pooled = prop["pooled"]
        row(
            "propagation per zone p50 / p99 / max",
            f"{ms(med['per_zone_p50'])} / {ms(med['per_zone_p99'])} / {ms(med['per_zone_max'])}",
            f"median of {len(prop['rounds'])} rounds of {p['writes']} writes x {z} zones",
        )
        row(
            "propagation, slowest zone p50 / p99 / max",
            f"{ms(med['slowest_zone_p50'])} / {ms(med['slowest_zone_p99'])} / {ms(med['slowest_zone_max'])}",
            "per write: applied at every zone; median of rounds",
        )
        row(
            "  pooled over all rounds: per zone p50 / p99; slowest p99",
            f"{ms(pooled['per_zone']['p50'])} / {ms(pooled['per_zone']['p99'])}; "
            f"{ms(pooled['slowest_zone']['p99'])}",
            f"{pooled['per_zone']['n']} samples; {prop['missing']} missing",
        )
        row(
            "  global CP CPU during propagation",
            f"{secs(med['global_cpu_s'])} per round, {med['global_cpu_ms_per_write']:.1f} ms per write",
            "median of rounds",
        )
    mem = record.get("memory", {})
    if "per_zone_bytes" in mem:
        row(
            "memory per connected zone (global CP RSS)",
            kib(mem["per_zone_bytes"]),
            f"(RSS after {z} synced - before any) / {z}",
        )
        row(
            "global CP RSS: idle / N resources, no zones / Z zones / peak",
            " / ".join(
                mib(mem[k])
                for k in (
                    "idle_rss_bytes",
                    "before_zones_rss_bytes",
                    "after_zones_rss_bytes",
                    "peak_rss_bytes",
                )
            ),
        )
    load = record.get("load")
    if load:
        row(
            f"loading {load['resources']} services through the API",
            secs(load["seconds"]),
            f"{load['requests']} applies of ≤{BATCH}; {load['resources_per_second']:.0f}/s",
        )

    head = (
        f"## sync: {n} resources, {z} zones, {p['writes']} writes x {p['rounds']} rounds\n\n"
        f"{m['cpus']} CPUs, load average at start {m['loadavg_at_start']}, Python {m['python']}, "
        f"commit {m['git_commit'][:10]}{' (dirty)' if m['git_dirty'] else ''}; {record['started_at']}\n\n"
        "Aim (issue): propagation p99 under 1 s, full sync under 2 s.\n\n"
    )
    out = head + markdown_table(["figure", "value", "how"], rows) + "\n"
    if prop:
        round_rows = [
            [
                str(i + 1),
                f"{ms(r['per_zone']['p50'])} / {ms(r['per_zone']['p99'])} / {ms(r['per_zone']['max'])}",
                f"{ms(r['slowest_zone']['p50'])} / {ms(r['slowest_zone']['p99'])}",
                ms(r["api_reply"]["p50"]),
                f"{r['global_cpu_s']:.2f} s",
                f"{r['bench_cpu_s']:.2f} s",
                str(r["missing"]),
            ]
            for i, r in enumerate(prop["rounds"])
        ]
        out += (
            "\n### propagation rounds\n\n"
            + markdown_table(
                [
                    "round",
                    "per zone p50 / p99 / max",
                    "slowest p50 / p99",
                    "API reply p50",
                    "global CPU",
                    "bench CPU",
                    "missing",
                ],
                round_rows,
            )
            + "\n"
        )
    profiles = record.get("profiles")
    if profiles and "skipped" not in profiles:
        out += "\n### profiles (py-spy, extra phases; their timings are not results)\n"
        for what, prof in profiles.items():
            out += (
                f"\n**{what}** ({prof.get('samples', 0)} samples, {prof.get('file', '')}): top self time\n\n"
            )
            out += (
                markdown_table(
                    ["function", "self %", "samples"],
                    [
                        [e["function"], f"{e['percent']}", str(e["samples"])]
                        for e in prof.get("self", [])[:12]
                    ],
                )
                + "\n"
            )
            out += (
                "\ntop total (on the stack)\n\n"
                + markdown_table(
                    ["function", "total %"],
                    [[e["function"], f"{e['percent']}"] for e in prof.get("total", [])[:15]],
                )
                + "\n"
            )
    return out
