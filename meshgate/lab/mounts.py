"""Where a node's mounts go and how their mount points come to exist, without I/O.

A node's root is a private tmpfs holding a bind of each top-level host directory (so ``/`` itself
is private: a missing top-level target such as ``/lab`` is simply created there), with fresh
tmpfs on ``/run``, ``/tmp`` and ``/dev/shm``. A missing target below a host directory (``/etc/x/y``
with no ``/etc/x``) gets an overlay on its deepest existing ancestor (the host directory as the
lower layer, a tmpfs upper layer), so the mount point is created in the node only; nothing is
ever created on the host.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

#: mount points of the node's root that are a fresh tmpfs (private from the start), and their options
PRIVATE_TMPFS: Final = {"/run": "mode=0755", "/tmp": "mode=1777"}  # noqa: S108 - the node's own /tmp
SHM: Final = "/dev/shm"  # noqa: S108 - the node's own, a fresh tmpfs


def hidden_in_node(paths: list[str]) -> list[str]:
    """The ``paths`` (real, absolute) that a node would not see because they lie below one of its
    private mounts (a virtualenv or a checkout under ``/tmp``), outermost first, no duplicates."""
    private = [*PRIVATE_TMPFS, SHM]
    found: list[str] = []
    for path in sorted({os.path.realpath(p) for p in paths if p}, key=len):
        below = any(path.startswith(f"{mount}/") for mount in private)
        if below and not any(path == f or path.startswith(f"{f}/") for f in found):
            found.append(path)
    return found


def depth(path: str) -> int:
    return len([part for part in path.split("/") if part])


def ordered(targets: list[str]) -> list[str]:
    """Parents before children (a bind on /a/b after one on /a)."""
    return sorted(targets, key=lambda target: (depth(target), target))


@dataclass
class MountTable:
    """The node's mounts as the setup made them: mount point -> whether its filesystem is the
    node's own (tmpfs, overlay upper) rather than the host's."""

    private: dict[str, bool] = field(default_factory=lambda: {"/": True})

    def add(self, mount_point: str, private: bool) -> None:
        self.private[os.path.normpath(mount_point)] = private

    def owner(self, path: str) -> str:
        """The mount point whose filesystem holds ``path``."""
        path = os.path.normpath(path)
        best = "/"
        for point in self.private:
            if (path == point or path.startswith(point.rstrip("/") + "/")) and depth(point) >= depth(best):
                best = point
        return best

    def is_private(self, path: str) -> bool:
        return self.private[self.owner(path)]


@dataclass(frozen=True)
class Preparation:
    """How to make ``target`` exist: overlay ``overlay`` first (when set), then create each of
    ``create`` in order (directories, and the last one a file when the bind's source is one)."""

    target: str
    overlay: str | None
    create: tuple[str, ...]
    last_is_file: bool


def prepare(target: str, *, is_dir: bool, exists: Callable[[str], bool], table: MountTable) -> Preparation:
    target = os.path.normpath(target)
    missing: list[str] = []
    ancestor = target
    while not exists(ancestor):
        missing.append(ancestor)
        ancestor = os.path.dirname(ancestor)
    missing.reverse()
    if not missing:
        return Preparation(target, None, (), False)
    overlay = None if table.is_private(ancestor) else ancestor
    return Preparation(target, overlay, tuple(missing), not is_dir)


def submounts(mount_points: list[str], directory: str) -> list[str]:
    """Mount points strictly below ``directory``, outermost first (each once: nested ones come
    along with a recursive bind of their parent)."""
    below = ordered([point for point in set(mount_points) if point.startswith(directory.rstrip("/") + "/")])
    outer: list[str] = []
    for point in below:
        if not any(point.startswith(parent + "/") for parent in outer):
            outer.append(point)
    return outer


def sysctl_path(key: str) -> str:
    return "/proc/sys/" + key.replace(".", "/")


def tmpfs_options(options: str) -> str:
    """docker's tmpfs options (``size=64m,mode=1777``): passed on, ``rw``/``ro`` left out."""
    return ",".join(part for part in options.split(",") if part and part not in ("rw", "ro"))


def read_only(options: str) -> bool:
    return "ro" in options.split(",")


def node_spec(
    hostname: str, binds: list[dict[str, object]], tmpfs: Mapping[str, str], sysctls: Mapping[str, str]
) -> dict[str, object]:
    """What ``node_init`` reads on its stdin."""
    return {"hostname": hostname, "binds": binds, "tmpfs": dict(tmpfs), "sysctls": dict(sysctls)}
