"""Starting ExaBGP so it cannot outlive the controller, and stopping it for sure.

ExaBGP keeps routes announced while it runs, whether anyone still drives it or not; so it is
started with a parent-death signal (``prctl(PR_SET_PDEATHSIG, SIGTERM)``), on which it closes
its sessions (a NOTIFICATION Cease: the routers drop its routes at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import select
import signal
from collections.abc import Mapping
from pathlib import Path

from meshgate.aio import wait_event

PR_SET_PDEATHSIG = 1

# Loaded in the parent: the child between fork and exec must not import or allocate.
_libc = ctypes.CDLL(None, use_errno=True)
_prctl = _libc.prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_prctl.restype = ctypes.c_int


def _die_with(parent: int) -> None:
    """In the child, before exec: SIGTERM when the parent goes. If it went already (between the
    fork and here) nothing would ever send it, so it is sent now."""
    os.setpgid(0, 0)  # its own group: a ^C at the controller's terminal is ours to pass on
    if _prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        os._exit(127)
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)


async def spawn(
    argv: list[str], *, env: Mapping[str, str], cwd: Path, log: Path
) -> asyncio.subprocess.Process:
    """``argv`` in its own process group, stdout and stderr appended to ``log``, stdin closed,
    with PR_SET_PDEATHSIG=SIGTERM.

    The parent-death signal fires when the *thread* that forked the child exits, not the
    process. asyncio forks in the thread that runs the event loop (``subprocess.Popen`` is called
    from ``create_subprocess_exec`` on the loop's thread), so call this from the loop's own
    thread only (never through ``to_thread`` or an executor): ExaBGP then lives exactly as long
    as the controller's event loop thread.
    """
    parent = os.getpid()
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            env=dict(env),
            cwd=cwd,
            # (no process_group=: uvloop, the edge's loop, refuses it; the child calls setpgid)
            preexec_fn=lambda: _die_with(parent),
        )


async def terminate(proc: asyncio.subprocess.Process, timeout: float) -> int:
    """SIGTERM (ExaBGP closes its sessions and exits), then SIGKILL to its whole process group
    after ``timeout`` seconds; waits for it either way. Its exit status."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(timeout):
                return await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    return await proc.wait()


class Pidfd:
    """A process that is not our child (the helper is ExaBGP's), held by a pidfd so that a
    signal never reaches a recycled PID."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._fd: int | None = os.pidfd_open(pid)

    def exited(self, timeout: float = 0.0) -> bool:
        if self._fd is None:
            return True
        ready, _, _ = select.select([self._fd], [], [], timeout)
        return bool(ready)

    async def wait(self, timeout: float) -> bool:
        """True once it exited, False if still running after ``timeout`` seconds."""
        if self._fd is None or self.exited():
            return True
        loop = asyncio.get_running_loop()
        gone = asyncio.Event()
        loop.add_reader(self._fd, gone.set)  # a pidfd turns readable when the process exits
        try:
            return await wait_event(gone, timeout)
        finally:
            loop.remove_reader(self._fd)

    def kill(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._fd, signal.SIGKILL)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
