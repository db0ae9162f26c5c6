"""A node's init: ``ip netns exec NS python -m meshgate.lab.node_init`` (its spec as JSON on
stdin). It makes the node's private mount and UTS namespaces, builds the node's root (see
``mounts``), applies binds and tmpfs mounts and ``net.*`` sysctls, chroots into the root, says
``{"event": "ready"}`` on stdout (or ``{"event": "error", "message": ...}`` and exits 1), then waits
for SIGTERM. Its PID is the node's handle: commands enter the node with ``nsenter --target PID
--net --mount --uts --root --wd``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import stat
import sys
from typing import Any, Final

from meshgate.lab import mounts

CLONE_NEWNS: Final = 0x00020000
CLONE_NEWUTS: Final = 0x04000000
MS_RDONLY: Final = 1
MS_REMOUNT: Final = 32
MS_BIND: Final = 4096
MS_REC: Final = 16384
MS_PRIVATE: Final = 1 << 18
#: where the node's root is built (a tmpfs mounted there in the node's namespace only)
ROOT: Final = "/tmp"  # noqa: S108 - a mount point in the node's private mount namespace
STAGING: Final = "/.meshgate-lab"

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _b(text: str | None) -> bytes | None:
    return None if text is None else os.fsencode(text)


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(_b(source), _b(target), _b(fstype), ctypes.c_ulong(flags), _b(data)),
           f"mount {source or fstype} on {target}")  # fmt: skip


def _unshare() -> None:
    _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWUTS), "unshare(mount, uts)")
    mount(None, "/", None, MS_REC | MS_PRIVATE)


def _sethostname(name: str) -> None:
    encoded = name.encode()[:64]
    _check(_libc.sethostname(encoded, len(encoded)), f"sethostname {name}")


def _build_root(table: mounts.MountTable) -> None:
    """The node's root at ROOT: top-level host entries bound in, private /run, /tmp, /dev/shm."""
    mount("tmpfs", ROOT, "tmpfs", 0, "mode=0755")
    for entry in sorted(os.scandir("/"), key=lambda e: e.name):
        name = "/" + entry.name
        inside = ROOT + name
        if name in mounts.PRIVATE_TMPFS:
            continue
        if entry.is_symlink():
            os.symlink(os.readlink(name), inside)
        elif entry.is_dir(follow_symlinks=False):
            os.mkdir(inside)
            mount(name, inside, None, MS_BIND | MS_REC)
            table.add(name, private=False)
        elif entry.is_file(follow_symlinks=False):
            open(inside, "x").close()
            mount(name, inside, None, MS_BIND)
            table.add(name, private=False)
    for name, options in mounts.PRIVATE_TMPFS.items():
        os.mkdir(ROOT + name)
        mount("tmpfs", ROOT + name, "tmpfs", 0, options)
        table.add(name, private=True)
    if os.path.isdir(ROOT + mounts.SHM):
        mount("tmpfs", ROOT + mounts.SHM, "tmpfs", 0, "mode=1777")
        table.add(mounts.SHM, private=True)
    os.chroot(ROOT)
    os.chdir("/")


def _mount_points() -> list[str]:
    with open("/proc/self/mountinfo") as info:
        return [line.split()[4].replace("\\040", " ") for line in info]


def _overlay(directory: str, table: mounts.MountTable, counter: list[int]) -> None:
    """Make ``directory`` writable in the node only: an overlay with it as the lower layer."""
    counter[0] += 1
    base = f"{STAGING}/overlay{counter[0]}"
    os.makedirs(f"{base}/upper")
    os.makedirs(f"{base}/work")
    keep = [
        (point, os.open(point, os.O_PATH | os.O_CLOEXEC))
        for point in mounts.submounts(_mount_points(), directory)
    ]
    try:
        mount(
            "overlay",
            directory,
            "overlay",
            0,
            f"lowerdir={directory},upperdir={base}/upper,workdir={base}/work",
        )
        for point, fd in keep:
            mount(f"/proc/self/fd/{fd}", point, None, MS_BIND | MS_REC)
    finally:
        for _point, fd in keep:
            os.close(fd)
    table.add(directory, private=True)


def _make_mount_point(target: str, is_dir: bool, table: mounts.MountTable, counter: list[int]) -> None:
    plan = mounts.prepare(target, is_dir=is_dir, exists=os.path.lexists, table=table)
    if plan.overlay is not None:
        _overlay(plan.overlay, table, counter)
    for index, path in enumerate(plan.create):
        if plan.last_is_file and index == len(plan.create) - 1:
            open(path, "x").close()
        else:
            os.mkdir(path)
    if os.path.isdir(target) != is_dir:
        raise OSError(
            f"{target} is a {'directory' if os.path.isdir(target) else 'file'} in the node: cannot bind a {'directory' if is_dir else 'file'} on it"
        )


def setup(spec: dict[str, Any]) -> None:
    binds = spec.get("binds", [])
    _unshare()
    # the sources are opened in the new namespace (a bind's source must be one of its mounts),
    # before the root changes: they may be below the host's /tmp
    sources = []
    for bind in binds:
        fd = os.open(str(bind["source"]), os.O_PATH | os.O_CLOEXEC)
        sources.append((bind, fd, stat.S_ISDIR(os.fstat(fd).st_mode)))
    _sethostname(str(spec.get("hostname") or "node"))
    table = mounts.MountTable()
    _build_root(table)
    counter = [0]
    requests: dict[str, tuple[str, Any]] = {
        str(bind["target"]): ("bind", (bind, fd, is_dir)) for bind, fd, is_dir in sources
    }
    for target, options in dict(spec.get("tmpfs", {})).items():
        requests[target] = ("tmpfs", options)
    for target in mounts.ordered(list(requests)):
        kind, detail = requests[target]
        if kind == "bind":
            bind, fd, is_dir = detail
            try:
                _make_mount_point(target, is_dir, table, counter)
                mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | (MS_REC if is_dir else 0))
                if bind.get("read_only"):
                    mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY)
            except OSError as exc:
                raise OSError(f"bind {bind['source']}:{target}: {exc}") from exc
            table.add(target, private=False)
        else:
            _make_mount_point(target, True, table, counter)
            mount(
                "tmpfs",
                target,
                "tmpfs",
                MS_RDONLY if mounts.read_only(detail) else 0,
                mounts.tmpfs_options(detail) or None,
            )
            table.add(target, private=True)
    for _bind, fd, _is_dir in sources:
        os.close(fd)
    for key, value in dict(spec.get("sysctls", {})).items():
        with open(mounts.sysctl_path(key), "w") as out:
            out.write(f"{value}\n")


def _say(event: dict[str, Any]) -> None:
    os.write(1, (json.dumps(event) + "\n").encode())


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        setup(json.loads(sys.stdin.read() or "{}"))
    except (OSError, ValueError, KeyError) as exc:
        _say({"event": "error", "message": str(exc)})
        return 1
    _say({"event": "ready"})
    # nothing more to say: the supervisor's pipe closes, and stdin/stdout point nowhere
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)
    with contextlib.suppress(KeyboardInterrupt):
        while True:
            signal.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main())
