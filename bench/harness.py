"""Pieces every benchmark scenario shares: processes owned by PID, their RSS and CPU time from
/proc, percentiles from raw samples, an optional py-spy profile, and results on disk.

Nothing here judges a figure: scenarios measure, these helpers record and print.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, Protocol, TypeVar

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent

T = TypeVar("T")
S = TypeVar("S", bound="CpuSplit")


# --- the machine -------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """What the figures were measured on, taken at the start (the machine is shared and noisy)."""
    load1, load5, load15 = os.getloadavg()
    return {
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "loadavg_at_start": [round(load1, 2), round(load5, 2), round(load15, 2)],
        "memory_total_bytes": _meminfo_total(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain")),
    }


def _meminfo_total() -> int | None:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return None


def _git(*args: str) -> str:
    try:
        done = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip()


# --- one process, from /proc ---------------------------------------------------------------------


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    """Resident set size now (``VmRSS``)."""
    return _status_kb(pid, "VmRSS") * 1024


def peak_rss_bytes(pid: int) -> int:
    """Highest resident set size so far (``VmHWM``)."""
    return _status_kb(pid, "VmHWM") * 1024


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(f"no {field} in /proc/{pid}/status")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used (``utime + stime`` of /proc/<pid>/stat)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()  # the command name may hold spaces
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


@dataclass
class CpuMeter:
    """CPU seconds a process uses between ``start`` and ``stop``."""

    pid: int
    started: float = 0.0
    used: float = 0.0

    def start(self) -> CpuMeter:
        self.started = cpu_seconds(self.pid)
        return self

    def stop(self) -> float:
        self.used = cpu_seconds(self.pid) - self.started
        return self.used


# --- statistics ----------------------------------------------------------------------------------


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile of the raw samples, interpolating linearly between the two closest
    ranks (the "inclusive" definition, numpy's default). NaN when there are no samples."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(samples: Sequence[float]) -> float:
    return percentile(samples, 50)


@dataclass(frozen=True)
class Summary:
    n: int
    min: float
    p50: float
    p99: float
    max: float
    mean: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Summary:
        if not samples:
            return cls(0, math.nan, math.nan, math.nan, math.nan, math.nan)
        return cls(
            len(samples),
            min(samples),
            percentile(samples, 50),
            percentile(samples, 99),
            max(samples),
            sum(samples) / len(samples),
        )

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


# --- processes -----------------------------------------------------------------------------------


class Stoppable(Protocol):
    """What tests.support's process wrappers offer: a polite stop, a sure kill (by PID)."""

    def stop(self, timeout: float = 10) -> int | None: ...

    def kill(self) -> None: ...


class Owned:
    """Processes this run started, stopped by PID in reverse order whatever happens."""

    def __init__(self) -> None:
        self._items: list[Stoppable] = []

    def add(self, process: T) -> T:
        self._items.append(process)  # type: ignore[arg-type]
        return process

    def stop_all(self) -> None:
        while self._items:
            process = self._items.pop()
            try:
                process.stop(10)
            except Exception as exc:
                print(f"bench: stopping {process!r} failed ({exc}); killing it", file=sys.stderr)
            with contextlib.suppress(Exception):
                process.kill()


@contextlib.contextmanager
def workdir(prefix: str, *, keep: bool = False) -> Iterator[Path]:
    """A temporary directory for data dirs and logs, removed at the end unless ``keep``."""
    path = Path(tempfile.mkdtemp(prefix=f"meshgate-bench-{prefix}-"))
    try:
        yield path
    finally:
        if keep:
            print(f"bench: kept {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


async def poll_until(
    condition: Callable[[], Awaitable[T | None]], *, interval: float, timeout: float, what: str
) -> T:
    """Await ``condition`` every ``interval`` seconds until it returns something truthy."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = await condition()
            if value:
                return value
        except Exception as exc:
            last_error = exc
        await asyncio.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last error: {last_error})")


# --- profiles (optional) ---------------------------------------------------------------------------


class Profiler:
    """``py-spy record`` attached to a PID, as collapsed stacks, summarised by function.

    Only for ``--profile`` runs: sampling slows the target, so profiled phases are extra ones
    whose timings are not reported as results."""

    def __init__(self, pid: int, out: Path, rate: int = 200) -> None:
        self.pid, self.out, self.rate = pid, out, rate
        self._proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("py-spy") is not None

    def start(self) -> Profiler:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(
            ["py-spy", "record", "--pid", str(self.pid), "--rate", str(self.rate), "--format", "raw",
             "--output", str(self.out), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        time.sleep(0.3)  # py-spy attaches
        return self

    def stop(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            self._proc.wait(30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def summary(self, top: int = 25) -> dict[str, Any]:
        """Samples by function: where the process was (self) and what was on the stack (total)."""
        return summarise_stacks(self.out, top)


def summarise_stacks(path: Path, top: int = 25, plumbing: Sequence[str] = ()) -> dict[str, Any]:
    """py-spy's collapsed stacks (``--format raw``) by function: own time (the innermost frame)
    and total time (on the stack), as shares of all samples. ``plumbing``: more frames that carry
    no information (a node's entry point). A sample with no frame left once the plumbing is
    dropped is time in the event loop itself (uvloop's C code: polling, I/O, TLS, callbacks)."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return {"samples": 0, "self": [], "total": []}
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [
            _function(frame)
            for frame in stack.split(";")
            if frame and not _plumbing(frame) and not any(part in frame for part in plumbing)
        ]
        if not frames:
            frames = ["(event loop: uvloop, I/O, TLS)" if "runners.py" in stack else "(thread idle)"]
        samples += count
        own[frames[-1]] += count
        for name in set(frames):
            total[name] += count

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"function": name, "samples": n, "percent": round(100 * n / max(samples, 1), 1)}
            for name, n in counter.most_common(top)
        ]

    return {"samples": samples, "self": share(own), "total": share(total)}


_PLUMBING = (
    "<frozen runpy>",
    "click/core.py",
    "asyncio/runners.py",
    "uvloop/__init__.py",
    "threading.py",
    "concurrent/futures/thread.py",
    "meshgate/__main__.py",
    "meshgate/cli/",
)


def _plumbing(frame: str) -> bool:
    """Frames on every stack (process start, the event loop, executor threads): no information.
    Samples whose innermost Python frame is the event loop itself count as ``(event loop)``."""
    return any(part in frame for part in _PLUMBING)


def _function(frame: str) -> str:
    """``name (path/to/module.py:123)`` -> ``name (module.py)``: one entry per function."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(path).parts
    short = "/".join(parts[-2:]) if len(parts) >= 2 else path
    return f"{name} ({short})" if where else name


# --- running -------------------------------------------------------------------------------------


@contextlib.contextmanager
def terminate_as_exit() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C does, so every process a run started is stopped."""

    def exit_now(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, exit_now)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def say(message: str) -> None:
    """A progress line on stderr, with the time."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- results -------------------------------------------------------------------------------------


def utc_stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return "\n".join([line(headers), "| " + " | ".join("-" * w for w in widths) + " |", *map(line, rows)])


def write_results(
    scenario: str,
    record: dict[str, Any],
    markdown: str,
    stamp: str | None = None,
    directory: Path | None = None,
) -> tuple[Path, Path]:
    """``bench/results/<UTC time>-<scenario>.json`` and ``.md`` (or in ``directory``), each
    written whole (via .tmp)."""
    stamp = stamp or utc_stamp()
    directory = directory or RESULTS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    paths = directory / f"{stamp}-{scenario}.json", directory / f"{stamp}-{scenario}.md"
    encoded = json.dumps(_finite(record), indent=2, default=_jsonable, allow_nan=False) + "\n"
    for path, text in zip(paths, (encoded, markdown), strict=True):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return paths


def _finite(value: Any) -> Any:
    """NaN and infinities (figures that could not be measured) become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _jsonable(value: object) -> object:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


# --- formatting ----------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:.1f} ms"


def secs(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds:.2f} s"


def mib(n_bytes: float) -> str:
    return "n/a" if math.isnan(n_bytes) else f"{n_bytes / (1 << 20):.1f} MiB"


def kib(n_bytes: float) -> str:
    return "n/a" if math.isnan(n_bytes) else f"{n_bytes / 1024:.0f} KiB"


@dataclass(frozen=True)
class CpuSplit:
    """Which CPUs the load (generator, upstream, the bench itself) and the proxies run on; None:
    wherever the scheduler puts them. Scenarios subclass it to describe their own processes."""

    load: frozenset[int] | None
    proxies: frozenset[int] | None

    @classmethod
    def choose(cls: type[S], pin: bool) -> S:
        """The first CPU for the load, the others for the proxies (no pinning on one CPU)."""
        cpus = sorted(os.sched_getaffinity(0))
        if not pin or len(cpus) < 2:
            return cls(None, None)
        return cls(frozenset(cpus[:1]), frozenset(cpus[1:]))

    def as_record(self) -> dict[str, list[int] | None]:
        return {
            "load": sorted(self.load) if self.load else None,
            "proxies": sorted(self.proxies) if self.proxies else None,
        }


def cpu_list(cpus: frozenset[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))


def print_log_tails(root: Path, skip: Callable[[Path], bool] = lambda _p: False) -> None:
    """The last lines of every process's log under ``root``, on stderr (a run that failed)."""
    for log in sorted(root.rglob("*.log")):
        if skip(log):
            continue
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        print(f"--- {log.relative_to(root)} (last lines)\n{tail}", file=sys.stderr)


@contextlib.contextmanager
def scenario_run(
    scenario: str, split: CpuSplit, *, keep: bool, skip_log: Callable[[Path], bool] = lambda _p: False
) -> Iterator[tuple[Path, Owned]]:
    """A scenario's temporary directory and the processes it owns, the bench on the load CPUs.
    On the way out every owned process is stopped and the bench's affinity restored; a failure
    first prints the tail of every log."""
    owned = Owned()
    own_cpus = os.sched_getaffinity(0)
    with terminate_as_exit(), workdir(scenario, keep=keep) as root:
        try:
            if split.load is not None:
                os.sched_setaffinity(0, split.load)
            yield root, owned
        except BaseException:
            print_log_tails(root, skip_log)
            raise
        finally:
            owned.stop_all()
            os.sched_setaffinity(0, own_cpus)
