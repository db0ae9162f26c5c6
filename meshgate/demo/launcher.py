"""The demo's processes: each ``meshgate <command>`` a child of the demo, in its own process
group (a ^C at the terminal reaches the demo alone, which stops them in order), that dies with
the demo even if the demo is SIGKILLed (``PR_SET_PDEATHSIG``), logging to a file of its own.

The parent-death signal fires when the *thread* that forked the child exits: children are spawned
from the event loop's thread only (the main thread, which lives as long as the demo).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

PR_SET_PDEATHSIG = 1
MESHGATE = (sys.executable, "-m", "meshgate")
POLL = 0.05  # seconds between readiness checks

# Loaded in the parent: between fork and exec the child must not import or allocate.
_libc = ctypes.CDLL(None, use_errno=True)
_prctl = _libc.prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_prctl.restype = ctypes.c_int


def _die_with(parent: int) -> None:
    """In the child, before exec: its own process group, and SIGTERM when the demo goes (sent now
    if the demo went already, between the fork and here)."""
    os.setpgid(0, 0)
    if _prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        os._exit(127)
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)


class StartFailed(Exception):
    def __init__(self, component: Component, reason: str) -> None:
        super().__init__(f"{component.name} failed to start: {reason}")
        self.component = component
        self.reason = reason


class Component:
    """One process of the demo: ``tier`` orders the shutdown (see ``run.STOP_ORDER``)."""

    def __init__(self, name: str, tier: str, args: Sequence[str], log: Path) -> None:
        self.name = name
        self.tier = tier
        self.argv = [*MESHGATE, *args]
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.returncode

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def spawn(self) -> None:
        parent = os.getpid()
        env = {k: v for k, v in os.environ.items() if not k.startswith("MESHGATE_")}
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=env,
                preexec_fn=lambda: _die_with(parent),  # on the loop's (main) thread only
            )

    async def wait_until(self, check: Callable[[], Awaitable[bool]], deadline: float, what: str) -> None:
        """Poll ``check`` until true; StartFailed if the process exits or ``deadline`` (monotonic)
        passes first."""
        while True:
            if self.proc is not None and self.proc.returncode is not None:
                raise StartFailed(self, f"exited with status {self.proc.returncode} before {what}")
            if await check():
                return
            if time.monotonic() > deadline:
                raise StartFailed(self, f"not {what} in time")
            await asyncio.sleep(POLL)

    async def stop(self, timeout: float) -> str:
        """SIGTERM, then SIGKILL to its process group after ``timeout`` seconds. How it ended."""
        proc = self.proc
        if proc is None:
            return "never started"
        if proc.returncode is not None:
            return f"had exited ({proc.returncode})"
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            return f"killed after {timeout:g} s"
        return "stopped" if code in (0, -signal.SIGTERM) else f"stopped ({code})"

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"
