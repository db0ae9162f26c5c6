"""Packet-level path traces: which node each tagged probe to a VIP reached.

A sender agent in the source node's namespace sends TCP SYNs (or UDP datagrams) to VIP:port,
each carrying the run's tag and its probe number; sniffer agents in the watched nodes'
namespaces report the probes they receive (``meshgate.lab.trace_agent``, JSON lines). The
sniffers are ready before the first probe leaves. A probe *reached* the watched node that saw it
last (the end of its path among them), so watching routers and edges together works.

A steady stream times a failover at packet level: ``switches`` gives the last probe seen at the
old node, the first seen at the new one, the time between them and the probes lost meanwhile::

    with tracing(lab, "client-eu", "203.0.113.10", 80, ["edge-eu", "edge-us"]) as session:
        session.send(count=None, interval=0.01)          # until finish()
        session.wait_for(lambda r: r.counts.get("edge-eu", 0) >= 20, timeout=5)
        ...                                              # kill or drain edge-eu
        session.wait_for(lambda r: r.counts.get("edge-us", 0) >= 20, timeout=30)
        result = session.finish()
    print(result.switches[0].seconds, result.lost)

This module does not import scapy (GPL, the ``lab`` extra): the agents do, in their own processes.
"""

from __future__ import annotations

import contextlib
import importlib.util
import ipaddress
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from meshgate.lab.nodes_protocol import LabNode, LabNodes
from meshgate.netns import terminate, wait_until

PROTOCOLS: Final = {"tcp": 6, "udp": 17}
MAGIC: Final = b"MGTR"
#: probe numbers stay below this (the TCP sequence fallback relies on it)
MAX_PROBES: Final = 1 << 24
SOURCE_PORTS: Final = (20000, 60000)
READY_TIMEOUT: Final = 30.0
STOP_TIMEOUT: Final = 5.0
SETTLE: Final = 1.0
INSTALL_HINT: Final = "packet traces need scapy: pip install 'meshgate[lab]'"
#: how an agent's error line starts when scapy cannot be imported
SCAPY_MISSING: Final = "scapy is not installed"


class TraceError(RuntimeError):
    """A trace that could not run (an agent failed to start, a bad argument)."""


class TraceUnavailable(TraceError):
    """scapy is not installed."""


# -- probe tags (pure) ----------------------------------------------------------------------------


def new_run() -> int:
    """A random 32-bit run tag: probes of other runs (or other traces at once) are ignored."""
    return secrets.randbits(32)


@dataclass(frozen=True)
class ProbeFields:
    """What marks probe ``number`` of a run: the payload carries run and number (``MGTR``, run,
    number; 4 bytes each), the TCP sequence number is run + number, the IP ID the number's low
    16 bits, and every probe of a run has the same source port (one flow, one ECMP path)."""

    sport: int
    seq: int
    ip_id: int
    payload: bytes


def encode_probe(run: int, number: int) -> ProbeFields:
    if not 0 <= number < MAX_PROBES:
        raise ValueError(f"probe number {number} out of range (0-{MAX_PROBES - 1})")
    low, high = SOURCE_PORTS
    return ProbeFields(
        sport=low + run % (high - low),
        seq=(run + number) & 0xFFFFFFFF,
        ip_id=number & 0xFFFF,
        payload=MAGIC + run.to_bytes(4, "big") + number.to_bytes(4, "big"),
    )


def decode_probe(run: int, payload: bytes, seq: int | None = None) -> int | None:
    """The number of a probe of ``run``, from its payload or (payload stripped) from its TCP
    sequence number; None if it is not one."""
    if payload[:4] == MAGIC and len(payload) >= 12:
        if int.from_bytes(payload[4:8], "big") != run:
            return None
        number = int.from_bytes(payload[8:12], "big")
        return number if number < MAX_PROBES else None
    if payload or seq is None:
        return None
    number = (seq - run) & 0xFFFFFFFF
    return number if number < MAX_PROBES else None


# -- results (pure) -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sighting:
    """A probe received by ``node`` on ``interface`` at ``time`` (wall clock, kernel stamp)."""

    node: str
    interface: str
    time: float


@dataclass(frozen=True)
class Probe:
    """One probe: when it was sent (or why it could not be), and every sighting, by time."""

    number: int
    sent: float | None = None
    error: str | None = None
    seen: tuple[Sighting, ...] = ()

    @property
    def reached(self) -> Sighting | None:
        """The last sighting: the farthest the probe went among the watched nodes."""
        return self.seen[-1] if self.seen else None


@dataclass(frozen=True)
class Switch:
    """Probes stopped reaching ``old`` and started reaching ``new``."""

    old: str
    new: str
    last_old: int
    last_old_time: float
    first_new: int
    first_new_time: float
    lost: int

    @property
    def seconds(self) -> float:
        """From the last probe received at the old node to the first received at the new one."""
        return self.first_new_time - self.last_old_time


@dataclass(frozen=True)
class TraceResult:
    run: int
    src: str
    dst: str
    port: int
    protocol: str
    via: tuple[str, ...]
    probes: tuple[Probe, ...]
    interval: float | None = None
    notes: tuple[str, ...] = ()

    @property
    def started(self) -> float | None:
        """Wall time of the first probe sent."""
        times = [probe.sent for probe in self.probes if probe.sent is not None]
        return min(times) if times else None

    @property
    def counts(self) -> dict[str, int]:
        """Probes per node reached, in the order the nodes were first reached."""
        return dict(Counter(p.reached.node for p in self.probes if p.reached is not None))

    @property
    def lost(self) -> tuple[int, ...]:
        """Probes sent that no watched node received."""
        return tuple(p.number for p in self.probes if p.error is None and not p.seen)

    @property
    def unsent(self) -> tuple[int, ...]:
        """Probes the source could not send (no route, say)."""
        return tuple(p.number for p in self.probes if p.error is not None)

    @property
    def switches(self) -> tuple[Switch, ...]:
        return find_switches(self.probes)

    def to_json(self) -> dict[str, Any]:
        base = self.started or 0.0

        def at(stamp: float | None) -> float | None:
            return None if stamp is None else round(stamp - base, 6)

        return {
            "run": f"{self.run:08x}",
            "from": self.src,
            "to": self.dst,
            "port": self.port,
            "protocol": self.protocol,
            "via": list(self.via),
            "interval": self.interval,
            "started": self.started,
            "probes": [
                {
                    "probe": p.number,
                    "sent": at(p.sent),
                    "error": p.error,
                    "node": p.reached.node if p.reached else None,
                    "interface": p.reached.interface if p.reached else None,
                    "seen": at(p.reached.time) if p.reached else None,
                    "sightings": [
                        {"node": s.node, "interface": s.interface, "time": at(s.time)} for s in p.seen
                    ],
                }
                for p in self.probes
            ],
            "counts": self.counts,
            "lost": list(self.lost),
            "unsent": list(self.unsent),
            "switches": [
                {
                    "from": s.old,
                    "to": s.new,
                    "seconds": round(s.seconds, 6),
                    "lastOld": {"probe": s.last_old, "time": at(s.last_old_time)},
                    "firstNew": {"probe": s.first_new, "time": at(s.first_new_time)},
                    "lost": s.lost,
                }
                for s in self.switches
            ],
            "notes": list(self.notes),
        }


def find_switches(probes: Sequence[Probe]) -> tuple[Switch, ...]:
    """Every change of the node reached between consecutive received probes (by number), with
    the probes lost in between (not received, or not sent)."""
    switches = []
    last: tuple[int, Sighting] | None = None
    lost = 0
    for probe in sorted(probes, key=lambda p: p.number):
        reached = probe.reached
        if reached is None:
            lost += last is not None
            continue
        if last is not None and reached.node != last[1].node:
            number, sighting = last
            switches.append(
                Switch(sighting.node, reached.node, number, sighting.time, probe.number, reached.time, lost)
            )
        last, lost = (probe.number, reached), 0
    return tuple(switches)


def default_via(nodes: Mapping[str, LabNode], src: str) -> list[str]:
    """The nodes labelled ``role: edge``, or else every node but the source."""
    edges = [name for name, node in nodes.items() if node.labels.get("role") == "edge" and name != src]
    return edges or [name for name in nodes if name != src]


# -- agents ---------------------------------------------------------------------------------------


def require_scapy() -> None:
    if importlib.util.find_spec("scapy") is None:
        raise TraceUnavailable(INSTALL_HINT)


def _agent_env() -> dict[str, str]:
    """This environment, with the directory holding ``meshgate`` first on PYTHONPATH (so the
    agent runs from the same tree, installed or not)."""
    root = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else "")}


class _Agent:
    """One agent process in a node's namespace; a thread reads its JSON lines into ``sink``."""

    def __init__(
        self, node: str, netns: str, argv: list[str], sink: Callable[[str, dict[str, Any]], None]
    ) -> None:
        self.node = node
        self.mode = argv[0]
        self._argv = ["ip", "netns", "exec", netns, sys.executable, "-m", "meshgate.lab.trace_agent", *argv]
        self._sink = sink
        self._ready = threading.Event()
        self._ended = threading.Event()
        self._stopping = False
        self._done = False
        self._errors: list[str] = []
        self._stderr: deque[str] = deque(maxlen=20)
        self._threads: list[threading.Thread] = []
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            self._argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_agent_env(),
        )
        for target in (self._read_stdout, self._read_stderr):
            thread = threading.Thread(target=target, name=f"trace-{self.mode}-{self.node}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _read_stdout(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for raw in self.process.stdout:
            try:
                event = json.loads(raw)
            except ValueError:
                self._stderr.append(raw.decode(errors="replace").rstrip())
                continue
            if not isinstance(event, dict):
                continue
            kind = event.get("event")
            if kind == "ready":
                self._ready.set()
            elif kind == "error":
                self._errors.append(str(event.get("message")))
            elif kind == "done":
                self._done = True
            else:
                self._sink(self.node, event)
        self._ended.set()

    def _read_stderr(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        for raw in self.process.stderr:
            self._stderr.append(raw.decode(errors="replace").rstrip())

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    def problem(self) -> str:
        """Why it failed, as well as it can tell."""
        code = None if self.process is None else self.process.poll()
        detail = "; ".join(self._errors) or " | ".join(line for line in self._stderr if line)
        status = f"exited with {code}" if code is not None else "did not get ready"
        return f"{self.mode} agent in {self.node} {status}" + (f": {detail}" if detail else "")

    def wait_ready(self, timeout: float) -> None:
        try:
            wait_until(lambda: self._ready.is_set() or self._ended.is_set(), timeout, interval=0.01)
        except TimeoutError:
            raise TraceError(self.problem()) from None
        if not self._ready.is_set():
            self.wait_ended(STOP_TIMEOUT)
            if any(error.startswith(SCAPY_MISSING) for error in self._errors):
                raise TraceUnavailable(INSTALL_HINT)
            raise TraceError(self.problem())

    def wait_ended(self, timeout: float | None) -> bool:
        return self._ended.wait(timeout)

    def ended_early(self) -> str | None:
        """A note if it ended before it was asked to stop, without finishing its work (killed
        with its node, say)."""
        if self.ended and not self._stopping and not self._done:
            return self.problem()
        return None

    def stop(self) -> None:
        """Close its stdin (it reports what it has, then exits); SIGTERM then SIGKILL by PID if
        it does not; wait for its output to be read."""
        if self.process is None:
            return
        if not self.ended:
            self._stopping = True  # one that ended by itself keeps its note
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        if not self.wait_ended(STOP_TIMEOUT):
            terminate((), children=[self.process], deadline=STOP_TIMEOUT)
        self.process.wait()
        for thread in self._threads:
            thread.join(STOP_TIMEOUT)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


# -- sessions -------------------------------------------------------------------------------------


@dataclass
class _Observed:
    sent: dict[int, float] = field(default_factory=dict)
    unsent: dict[int, tuple[float, str]] = field(default_factory=dict)
    seen: dict[int, list[Sighting]] = field(default_factory=dict)


class TraceSession:
    """Sniffers on the watched nodes (started and ready on ``start``), senders on demand, and
    what they reported so far (``snapshot``). Use ``tracing`` for a session that stops itself."""

    def __init__(
        self,
        nodes: LabNodes,
        src: str,
        dst: str,
        port: int,
        via: Sequence[str] = (),
        *,
        protocol: str = "tcp",
        ready_timeout: float = READY_TIMEOUT,
    ) -> None:
        known = nodes.nodes
        via = list(via) or default_via(known, src)
        problems = [f"no node {name!r} in this lab" for name in [src, *via] if name not in known]
        try:
            address = ipaddress.ip_address(dst)
            if address.version != 4:
                problems.append(f"{dst}: traces probe IPv4 addresses only")
        except ValueError:
            problems.append(f"{dst!r} is not an IP address")
        if not 1 <= port <= 65535:
            problems.append(f"port {port} is not 1-65535")
        if protocol not in PROTOCOLS:
            problems.append(f"protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")
        if not via:
            problems.append("no node to watch (name some with via)")
        if problems:
            raise TraceError("; ".join(problems))
        self.nodes, self.src, self.dst, self.port, self.protocol = nodes, src, dst, port, protocol
        self.via = tuple(dict.fromkeys(via))
        self.run = new_run()
        self.ready_timeout = ready_timeout
        self.interval: float | None = None
        self._lock = threading.Lock()
        self._observed = _Observed()
        self._sniffers: list[_Agent] = []
        self._senders: list[_Agent] = []
        self._next = 0
        self._closed = False

    def _common_args(self) -> list[str]:
        return [
            f"--run={self.run:08x}",
            f"--dst={self.dst}",
            f"--port={self.port}",
            f"--protocol={self.protocol}",
        ]

    def _sink(self, node: str, event: dict[str, Any]) -> None:
        kind, number, stamp = event.get("event"), event.get("probe"), event.get("time")
        if not isinstance(number, int) or not isinstance(stamp, int | float):
            return
        with self._lock:
            if kind == "sent":
                self._observed.sent[number] = float(stamp)
            elif kind == "unsent":
                self._observed.unsent[number] = (float(stamp), str(event.get("error")))
            elif kind == "seen":
                sighting = Sighting(node, str(event.get("interface")), float(stamp))
                self._observed.seen.setdefault(number, []).append(sighting)

    def start(self) -> TraceSession:
        """Start a sniffer in every watched node and wait until all are ready."""
        require_scapy()
        try:
            for node in self.via:
                agent = _Agent(node, self.nodes.netns(node), ["sniff", *self._common_args()], self._sink)
                self._sniffers.append(agent)
                agent.start()
            for agent in self._sniffers:
                agent.wait_ready(self.ready_timeout)
        except BaseException:
            self.close()
            raise
        return self

    def send(self, count: int | None, interval: float) -> None:
        """Start sending ``count`` probes (None: until ``stop_sending`` or ``finish``), one every
        ``interval`` seconds; returns once the sender is ready. Probe numbers go on from the
        previous ``send``; one sender at a time."""
        if not self._sniffers or self._closed:
            raise TraceError("the session is not started")
        if count is not None and count < 1:
            raise TraceError("count must be at least 1 (or None: until stopped)")
        if not interval > 0:
            raise TraceError("interval must be more than 0")
        if any(not sender.ended for sender in self._senders):
            raise TraceError("a sender is still running (wait_sent or stop_sending first)")
        first = self._next
        self._next = MAX_PROBES if count is None else first + count
        if self._next > MAX_PROBES:
            raise TraceError(f"at most {MAX_PROBES} probes per session")
        args = [*self._common_args(), f"--count={count or 0}", f"--interval={interval!r}", f"--first={first}"]
        sender = _Agent(self.src, self.nodes.netns(self.src), ["send", *args], self._sink)
        self.interval = interval
        self._senders.append(sender)
        sender.start()
        sender.wait_ready(self.ready_timeout)

    def wait_sent(self, timeout: float | None = None) -> None:
        """Wait until the sender has sent its count (TimeoutError after ``timeout`` seconds)."""
        if self._next >= MAX_PROBES and any(not sender.ended for sender in self._senders):
            raise TraceError("the sender sends until stopped (count None): use stop_sending or finish")
        for sender in self._senders:
            if not sender.wait_ended(timeout):
                raise TimeoutError(f"probes still being sent after {timeout} s")

    def stop_sending(self) -> None:
        for sender in self._senders:
            sender.stop()
        with self._lock:
            numbers = [*self._observed.sent, *self._observed.unsent]
        if numbers and self._next >= MAX_PROBES:
            self._next = max(numbers) + 1

    def snapshot(self) -> TraceResult:
        """What the agents reported so far."""
        with self._lock:
            sent = dict(self._observed.sent)
            unsent = dict(self._observed.unsent)
            seen = {number: list(sightings) for number, sightings in self._observed.seen.items()}
        probes = []
        for number in sorted({*sent, *unsent, *seen}):
            failure = unsent.get(number)
            probes.append(
                Probe(
                    number=number,
                    sent=sent.get(number, failure[0] if failure else None),
                    error=failure[1] if failure else None,
                    seen=tuple(sorted(seen.get(number, ()), key=lambda s: s.time)),
                )
            )
        notes = [note for agent in [*self._sniffers, *self._senders] if (note := agent.ended_early())]
        return TraceResult(
            run=self.run,
            src=self.src,
            dst=self.dst,
            port=self.port,
            protocol=self.protocol,
            via=self.via,
            probes=tuple(probes),
            interval=self.interval,
            notes=tuple(notes),
        )

    def wait_for(
        self, predicate: Callable[[TraceResult], bool], timeout: float, what: str = ""
    ) -> TraceResult:
        """Poll ``snapshot`` until ``predicate`` holds (TimeoutError after ``timeout``)."""
        found: list[TraceResult] = []

        def holds() -> bool:
            found[:] = [self.snapshot()]
            return predicate(found[0])

        wait_until(holds, timeout, interval=0.02, what=what or f"trace condition within {timeout} s")
        return found[0]

    def finish(self, settle: float = SETTLE) -> TraceResult:
        """Stop sending, give the last probes up to ``settle`` seconds to arrive (less when all
        have), stop the sniffers (each reports what it received first) and return the result."""
        self.stop_sending()

        def all_arrived() -> bool:
            with self._lock:
                return set(self._observed.sent) <= set(self._observed.seen)

        with contextlib.suppress(TimeoutError):
            wait_until(all_arrived, settle, interval=0.01)
        for sniffer in self._sniffers:
            sniffer.stop()
        result = self.snapshot()
        self.close()
        return result

    def close(self) -> None:
        """Stop every agent (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for agent in [*self._senders, *self._sniffers]:
            agent.stop()

    def __enter__(self) -> TraceSession:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@contextlib.contextmanager
def tracing(
    nodes: LabNodes,
    src: str,
    dst: str,
    port: int = 80,
    via: Sequence[str] = (),
    *,
    protocol: str = "tcp",
    ready_timeout: float = READY_TIMEOUT,
) -> Iterator[TraceSession]:
    """A started ``TraceSession`` (sniffers ready), stopped on the way out."""
    session = TraceSession(nodes, src, dst, port, via, protocol=protocol, ready_timeout=ready_timeout)
    with session:
        yield session.start()


def trace(
    nodes: LabNodes,
    src: str,
    dst: str,
    port: int = 80,
    via: Sequence[str] = (),
    count: int = 10,
    interval: float = 0.1,
    *,
    protocol: str = "tcp",
    settle: float = SETTLE,
    ready_timeout: float = READY_TIMEOUT,
) -> TraceResult:
    """Send ``count`` probes from ``src`` to ``dst``:``port``, one every ``interval`` seconds,
    watching ``via`` (default: nodes labelled ``role: edge``, else all but ``src``)."""
    with tracing(nodes, src, dst, port, via, protocol=protocol, ready_timeout=ready_timeout) as session:
        started = time.monotonic()
        session.send(count, interval)
        session.wait_sent(timeout=count * interval + ready_timeout - (time.monotonic() - started))
        return session.finish(settle)
