"""Where a proxy process's CPU goes, by library, from ``perf record -e cpu-clock`` (for the
``mesh`` scenario's ``--profile``, when ``perf`` is installed).

py-spy samples a process whether it runs or waits for the CPU: with a chain's three processes on
one core, a process preempted right after the send that woke the next hop is charged to the
function that sent, which overstates it. ``perf``'s cpu-clock samples only what ran, kernel
included, so it tells how a process's CPU splits between the interpreter, the kernel (system
calls, loopback TCP), OpenSSL, uvloop and httptools (or HAProxy itself).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Final

PERF: Final = "perf"
FREQUENCY: Final = 999
#: a library's file name -> what it is
CATEGORIES: Final = (
    ("[kernel", "kernel"),
    ("libpython", "Python interpreter"),
    ("libcrypto", "OpenSSL"),
    ("libssl", "OpenSSL"),
    ("_ssl.", "Python ssl module"),
    ("loop.cpython", "uvloop"),
    ("parser.cpython", "httptools"),
    ("libc.so", "libc"),
    ("haproxy", "HAProxy"),
)
_LINE: Final = re.compile(r"^\s+([0-9.]+)%\s+(\S+)(?:\s+\[[.k]\]\s+(.+?))?\s*$")


def available() -> bool:
    return shutil.which(PERF) is not None


def record(pid: int, out: Path, seconds: float) -> subprocess.Popen[bytes]:
    """Start sampling ``pid`` (all threads) for ``seconds``; wait for the returned process."""
    argv = [PERF, "record", "-e", "cpu-clock", "-F", str(FREQUENCY), "-p", str(pid), "-o", str(out),
            "--", "sleep", str(seconds)]  # fmt: skip
    return subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


def category(dso: str) -> str:
    for part, name in CATEGORIES:
        if part in dso:
            return name
    return "other"


def parse_report(text: str) -> list[tuple[float, str, str]]:
    """``perf report --stdio`` lines: (percent, library, symbol or "")."""
    rows = []
    for line in text.splitlines():
        match = _LINE.match(line)
        if match is not None:
            rows.append((float(match.group(1)), match.group(2), match.group(3) or ""))
    return rows


def summarise(data: Path, top: int = 12) -> dict[str, Any]:
    """Shares of the samples by category of library, and the top symbols."""
    if not data.exists():
        return {"error": "no perf data"}

    def report(sort: str) -> str:
        done = subprocess.run(
            [PERF, "report", "-i", str(data), "--no-children", "--sort", sort, "--stdio"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        return done.stdout

    by_category: dict[str, float] = {}
    for percent, dso, _ in parse_report(report("dso")):
        by_category[category(dso)] = by_category.get(category(dso), 0.0) + percent
    symbols = parse_report(report("dso,sym"))[:top]
    return {
        "by_category": {
            name: round(share, 1) for name, share in sorted(by_category.items(), key=lambda kv: -kv[1])
        },
        "top_symbols": [{"percent": p, "library": Path(d).name, "symbol": s} for p, d, s in symbols],
    }
