"""Running programs inside a node: the environment they get and the ``nsenter`` that puts them
in the node's network, mount and UTS namespaces and root (those of its init process)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

import meshgate

SYSTEM_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def code_root() -> str:
    """The directory holding this ``meshgate`` package (PYTHONPATH for the lab's processes, so
    they run this very code whatever is installed)."""
    return str(Path(meshgate.__file__).resolve().parent.parent)


def python_env(python: str = sys.executable, root: str | None = None) -> dict[str, str]:
    """For the runner's own processes (supervisor, node init)."""
    return {
        "PATH": f"{os.path.dirname(python)}:{SYSTEM_PATH}",
        "PYTHONPATH": root or code_root(),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
    }


def node_env(node_env: Mapping[str, str], hostname: str, python: str, root: str) -> dict[str, str]:
    """A node's processes: a clean environment (as a container's) with the running Python's
    directory first on PATH, then the topology's ``env`` (which may replace any of it)."""
    env = {
        "PATH": f"{os.path.dirname(python)}:{SYSTEM_PATH}",
        "HOME": "/root",
        "HOSTNAME": hostname,
        "PYTHONPATH": root,
        "LANG": "C.UTF-8",
    }
    if "TERM" in os.environ:
        env["TERM"] = os.environ["TERM"]
    env.update(node_env)
    return env


def nsenter(pid: int, argv: Sequence[str]) -> list[str]:
    """``argv`` inside the node whose init is ``pid`` (nsenter execs it: same PID)."""
    return ["nsenter", f"--target={pid}", "--net", "--mount", "--uts", "--root", "--wd", "--", *argv]


def kill_group(process: subprocess.Popen[str] | subprocess.Popen[bytes]) -> None:
    """SIGKILL a process started with ``start_new_session`` and everything in its group."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def run_in_node(
    pid: int, argv: Sequence[str], env: Mapping[str, str], *, timeout: float = 30, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run and wait, output captured as text; never raises on a non-zero exit. After ``timeout``
    seconds the command (its process group) is killed and ``subprocess.TimeoutExpired`` raised."""
    command = nsenter(pid, argv)
    process = subprocess.Popen(
        command, env=dict(env), stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, cwd="/",
    )  # fmt: skip
    try:
        stdout, stderr = process.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(process)
        process.communicate()
        raise
    except BaseException:
        kill_group(process)
        process.wait()
        raise
    return subprocess.CompletedProcess(list(argv), process.returncode, stdout, stderr)
