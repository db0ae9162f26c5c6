"""Network namespaces as building blocks for edge tests and labs.

A ``Namespace`` is one ``ip netns`` namespace with a unique name (``mg-<role>-<6 hex>``), the
processes started in it (recorded by PID) and a state file naming the process that owns it
(``/run/meshgate-netns/<name>``), so that ``cleanup_stale`` can remove what a crashed run left
behind without touching namespaces whose owner is still alive.

Everything is done with ``ip`` (``ip -n NAME ...`` for links, addresses and routes, ``ip netns
exec NAME ...`` for programs), ``sysctl`` and signals to recorded PIDs; nothing is ever killed by
name. The machine is shared: names are random, interface names are checked (15 characters at
most) and veth pairs are created directly inside their two namespaces, so nothing of ours ever
appears in the root namespace, not even for a moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ipaddress
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final

STATE_DIR: Final = Path("/run/meshgate-netns")
NETNS_DIR: Final = Path("/run/netns")
NAME_PREFIX: Final = "mg-"
#: SIGTERM, then this long before SIGKILL
STOP_DEADLINE: Final = 5.0

_ROLE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,22}[a-z0-9])?")
_IFNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}")
_SYSCTL_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./-]*")
_CLONE_NEWNET: Final = 0x40000000


class CommandFailed(subprocess.CalledProcessError):
    """A command that exited non-zero; its message carries the command's stderr."""

    def __str__(self) -> str:
        stderr = (self.stderr or "").strip() if isinstance(self.stderr, str) else ""
        return f"{' '.join(map(str, self.cmd))} exited with {self.returncode}" + (
            f": {stderr}" if stderr else ""
        )


def _run(
    argv: Sequence[str], *, check: bool = True, timeout: float = 30.0, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, input=input, check=False
    )
    if check and done.returncode != 0:
        raise CommandFailed(done.returncode, done.args, done.stdout, done.stderr)
    return done


def check_ifname(ifname: str) -> str:
    """``ifname`` if it is a valid interface name (at most 15 characters), else ValueError."""
    if not _IFNAME.fullmatch(ifname):
        raise ValueError(f"invalid interface name {ifname!r} (1-15 of A-Z a-z 0-9 _ . -)")
    return ifname


# -- waiting ----------------------------------------------------------------------------------


def wait_until(
    predicate: Callable[[], bool], timeout: float, interval: float = 0.02, what: str = ""
) -> float:
    """Poll ``predicate`` until it is true; the seconds it took, or ``TimeoutError(what)``."""
    start = time.monotonic()
    deadline = start + timeout
    while True:
        if predicate():
            return time.monotonic() - start
        now = time.monotonic()
        if now >= deadline:
            raise TimeoutError(what or f"condition not met within {timeout} s")
        time.sleep(min(interval, deadline - now))


async def wait_until_async(
    predicate: Callable[[], bool], timeout: float, interval: float = 0.02, what: str = ""
) -> float:
    """``wait_until`` for coroutines: polls with ``asyncio.sleep`` between checks."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline = start + timeout
    while True:
        if predicate():
            return loop.time() - start
        now = loop.time()
        if now >= deadline:
            raise TimeoutError(what or f"condition not met within {timeout} s")
        await asyncio.sleep(min(interval, deadline - now))


# -- processes --------------------------------------------------------------------------------


def process_start_time(pid: int) -> int | None:
    """The start time of ``pid`` (clock ticks after boot), None if it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    fields = stat[stat.rfind(")") + 2 :].split()
    if fields[0] in ("Z", "X"):  # zombies are dead, whoever is to reap them
        return None
    return int(fields[19])


def process_alive(pid: int, start_time: int | None = None) -> bool:
    """Whether ``pid`` runs (and, given ``start_time``, is still the same process)."""
    started = process_start_time(pid)
    return started is not None and (start_time is None or started == start_time)


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def terminate(
    pids: Iterable[int],
    *,
    children: Sequence[subprocess.Popen[bytes]] = (),
    deadline: float = STOP_DEADLINE,
) -> None:
    """Stop processes by PID: SIGTERM, wait up to ``deadline`` seconds, then SIGKILL.

    ``children`` are ``Popen`` objects of this process (waited for, so they leave no zombie);
    ``pids`` are other processes (daemons, anything else found in a namespace), each identified
    by its start time so that a PID reused meanwhile is never signalled.
    """
    others = {pid: start for pid in pids if (start := process_start_time(pid)) is not None}
    running = [child for child in children if child.poll() is None]

    def alive() -> list[int]:
        found = [child.pid for child in running if child.poll() is None]
        return found + [pid for pid, start in others.items() if process_alive(pid, start)]

    for pid in alive():
        _signal(pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        wait_until(lambda: not alive(), deadline, interval=0.01)
    for pid in alive():
        _signal(pid, signal.SIGKILL)
    wait_until(lambda: not alive(), 10.0, interval=0.01, what="processes still alive after SIGKILL")


# -- owner state ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Owner:
    """The process a namespace belongs to; its leftovers may go once it is dead."""

    pid: int
    start_time: int | None

    @classmethod
    def of(cls, pid: int) -> Owner:
        return cls(pid, process_start_time(pid))

    @property
    def alive(self) -> bool:
        return process_alive(self.pid, self.start_time)


def _state_path(name: str) -> Path:
    return STATE_DIR / name


def _claim(name: str, owner: Owner) -> bool:
    """Write ``name``'s state file unless it exists (atomically); False if it does."""
    STATE_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    record = {"name": name, "owner_pid": owner.pid, "owner_start": owner.start_time, "created": time.time()}
    temporary = STATE_DIR / f".{name}.{os.getpid()}.{secrets.token_hex(4)}"
    temporary.write_text(json.dumps(record) + "\n")
    try:
        os.link(temporary, _state_path(name))  # fails if the name is taken: no overwrite race
    except FileExistsError:
        return False
    finally:
        temporary.unlink()
    return True


def read_owner(name: str) -> Owner | None:
    """The owner recorded for namespace ``name``, None without a (readable) state file."""
    try:
        record = json.loads(_state_path(name).read_text())
        start = record.get("owner_start")
        return Owner(int(record["owner_pid"]), None if start is None else int(start))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def list_namespaces() -> list[str]:
    """Names of every network namespace known to ``ip netns``."""
    done = _run(["ip", "-j", "netns", "list"])
    return [entry["name"] for entry in json.loads(done.stdout or "[]")]


# -- namespaces -------------------------------------------------------------------------------


class Namespace:
    """One network namespace: links, addresses, routes, sysctls, and the processes run in it."""

    def __init__(self, name: str) -> None:
        """Refer to namespace ``name`` (see ``create`` and ``attach``)."""
        self.name = name
        self._children: list[subprocess.Popen[bytes]] = []
        self._deleted = False

    @classmethod
    def create(cls, role: str, *, owner_pid: int | None = None) -> Namespace:
        """A new namespace ``mg-<role>-<6 hex>`` with ``lo`` up, owned by ``owner_pid``
        (default: this process; a lab may name the process that outlives its command)."""
        if not _ROLE.fullmatch(role):
            raise ValueError(f"invalid role {role!r} (1-24 of a-z 0-9 -, not starting or ending with -)")
        owner = Owner.of(os.getpid() if owner_pid is None else owner_pid)
        for _ in range(100):
            name = f"{NAME_PREFIX}{role}-{secrets.token_hex(3)}"
            if (NETNS_DIR / name).exists() or not _claim(name, owner):
                continue
            done = _run(["ip", "netns", "add", name], check=False)
            if done.returncode != 0:
                _state_path(name).unlink(missing_ok=True)
                if (NETNS_DIR / name).exists():
                    continue  # someone else's, created between the check and ours
                raise CommandFailed(done.returncode, done.args, done.stdout, done.stderr)
            namespace = cls(name)
            try:
                namespace.set_up("lo")
            except BaseException:
                namespace.delete()
                raise
            return namespace
        raise RuntimeError(f"no free namespace name for role {role!r} after 100 tries")

    @classmethod
    def attach(cls, name: str) -> Namespace:
        """An existing namespace (e.g. one a lab created in an earlier command)."""
        if not (NETNS_DIR / name).exists():
            raise FileNotFoundError(f"no network namespace {name!r}")
        return cls(name)

    def __repr__(self) -> str:
        return f"Namespace({self.name!r})"

    def __enter__(self) -> Namespace:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.delete()

    @property
    def owner(self) -> Owner | None:
        return read_owner(self.name)

    def exists(self) -> bool:
        return (NETNS_DIR / self.name).exists()

    # -- commands ---------------------------------------------------------------------------

    def run(
        self, *argv: str, check: bool = True, timeout: float = 30.0, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the namespace and wait for it (output captured as text)."""
        return _run(["ip", "netns", "exec", self.name, *argv], check=check, timeout=timeout, input=input)

    def popen(self, argv: Sequence[str], **popen_kwargs: Any) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside the namespace; its PID is recorded and ``delete`` stops it.

        ``ip netns exec`` execs the program, so the ``Popen``'s PID is the program's own.
        """
        process: subprocess.Popen[bytes] = subprocess.Popen(
            ["ip", "netns", "exec", self.name, *argv], **popen_kwargs
        )
        self._children.append(process)
        return process

    @property
    def processes(self) -> list[subprocess.Popen[bytes]]:
        """The processes started with ``popen`` (running or not)."""
        return list(self._children)

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``ip -n NAME ARGS``."""
        return _run(["ip", "-n", self.name, *args], check=check)

    def ip_json(self, *args: str) -> Any:
        """``ip -n NAME -j ARGS``, decoded."""
        return json.loads(_run(["ip", "-n", self.name, "-j", *args]).stdout or "[]")

    # -- sockets in the namespace, in this process ------------------------------------------

    def open_socket(
        self, family: socket.AddressFamily = socket.AF_INET, kind: socket.SocketKind = socket.SOCK_STREAM
    ) -> socket.socket:
        """A socket that lives in this namespace, made in this process: a short-lived thread
        enters the namespace (setns), creates it and ends. Use it from any thread or event loop
        (``loop.create_connection(sock=...)``, ``asyncio.start_server(sock=...)``)."""
        made: list[socket.socket] = []
        failed: list[BaseException] = []

        def enter_and_create() -> None:
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                with (NETNS_DIR / self.name).open("rb") as handle:
                    if libc.setns(handle.fileno(), _CLONE_NEWNET) != 0:
                        errno = ctypes.get_errno()
                        raise OSError(errno, f"setns({self.name}): {os.strerror(errno)}")
                made.append(socket.socket(family, kind))
            except BaseException as exc:
                failed.append(exc)

        thread = threading.Thread(target=enter_and_create, name=f"setns-{self.name}")
        thread.start()
        thread.join()
        if failed:
            raise failed[0]
        return made[0]

    def tcp_connect(self, host: str, port: int, timeout: float = 5.0) -> socket.socket:
        """A TCP connection from inside the namespace (blocking socket, ``timeout`` set)."""
        sock = self.open_socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.settimeout(timeout)
        try:
            sock.connect((host, port))
        except BaseException:
            sock.close()
            raise
        return sock

    def tcp_listen(self, host: str, port: int = 0, backlog: int = 128) -> socket.socket:
        """A listening TCP socket inside the namespace (port 0: any free port)."""
        sock = self.open_socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(backlog)
        except BaseException:
            sock.close()
            raise
        return sock

    # -- links and addresses ----------------------------------------------------------------

    def set_up(self, ifname: str) -> None:
        self.ip("link", "set", "dev", check_ifname(ifname), "up")

    def set_down(self, ifname: str) -> None:
        self.ip("link", "set", "dev", check_ifname(ifname), "down")

    def add_address(self, ifname: str, cidr: str) -> None:
        """Add ``cidr`` (``10.1.2.1/30``) to ``ifname``."""
        interface = ipaddress.ip_interface(cidr)
        self.ip("address", "add", str(interface), "dev", check_ifname(ifname))

    def add_loopback_address(self, cidr: str) -> None:
        """Add ``cidr`` to ``lo`` (anycast VIPs: a /32 without a prefix length is taken as one)."""
        self.add_address("lo", cidr)

    def links(self) -> list[dict[str, Any]]:
        """``ip -j link show``."""
        links: list[dict[str, Any]] = self.ip_json("link", "show")
        return links

    def addresses(self, ifname: str | None = None) -> list[str]:
        """The addresses (``a.b.c.d/len``) on ``ifname``, or on every interface."""
        args = ["address", "show"] + (["dev", check_ifname(ifname)] if ifname else [])
        return [
            f"{info['local']}/{info['prefixlen']}"
            for link in self.ip_json(*args)
            for info in link.get("addr_info", [])
        ]

    # -- routes -----------------------------------------------------------------------------

    def _route(
        self,
        verb: str,
        prefix: str,
        via: str | Sequence[str] | None,
        dev: str | None,
        table: int | str | None,
        metric: int | None,
    ) -> None:
        args = ["route", verb, str(ipaddress.ip_network(prefix, strict=False))]
        gateways = [via] if isinstance(via, str) else list(via or ())
        if len(gateways) > 1:  # ECMP
            for gateway in gateways:
                args += ["nexthop", "via", str(ipaddress.ip_address(gateway))]
                if dev:
                    args += ["dev", check_ifname(dev)]
        else:
            if gateways:
                args += ["via", str(ipaddress.ip_address(gateways[0]))]
            if dev:
                args += ["dev", check_ifname(dev)]
        if table is not None:
            args += ["table", str(table)]
        if metric is not None:
            args += ["metric", str(metric)]
        self.ip(*args)

    def add_route(
        self,
        prefix: str,
        *,
        via: str | Sequence[str] | None = None,
        dev: str | None = None,
        table: int | str | None = None,
        metric: int | None = None,
    ) -> None:
        """``ip route add``; several ``via`` addresses make one ECMP route."""
        self._route("add", prefix, via, dev, table, metric)

    def replace_route(
        self,
        prefix: str,
        *,
        via: str | Sequence[str] | None = None,
        dev: str | None = None,
        table: int | str | None = None,
        metric: int | None = None,
    ) -> None:
        """``ip route replace``: the route moves in one step (no moment without it)."""
        self._route("replace", prefix, via, dev, table, metric)

    def delete_route(self, prefix: str, *, table: int | str | None = None) -> None:
        args = ["route", "del", str(ipaddress.ip_network(prefix, strict=False))]
        self.ip(*args, *(["table", str(table)] if table is not None else []))

    def routes(self, prefix: str | None = None, *, table: int | str | None = None) -> list[dict[str, Any]]:
        """``ip -j route show`` (``exact PREFIX`` when given; the main table unless ``table``)."""
        args = ["route", "show"]
        if table is not None:
            args += ["table", str(table)]
        if prefix is not None:
            args += ["exact", str(ipaddress.ip_network(prefix, strict=False))]
        routes: list[dict[str, Any]] = self.ip_json(*args)
        return routes

    def nexthops(self, prefix: str, *, table: int | str | None = None) -> set[str]:
        """The gateways of the kernel route for exactly ``prefix``: one, several (ECMP), or none
        when there is no such route (of several routes, the one with the lowest metric)."""
        routes = [r for r in self.routes(prefix, table=table) if r.get("type", "unicast") == "unicast"]
        if not routes:
            return set()
        best = min(routes, key=lambda route: int(route.get("metric", 0)))
        if "nexthops" in best:
            return {hop["gateway"] for hop in best["nexthops"] if "gateway" in hop}
        return {best["gateway"]} if "gateway" in best else set()

    # -- sysctl -----------------------------------------------------------------------------

    def sysctl(self, key: str, value: str | int) -> None:
        """Set ``key`` (``net.ipv4.ip_forward``) to ``value`` inside the namespace."""
        if not _SYSCTL_KEY.fullmatch(key):
            raise ValueError(f"invalid sysctl key {key!r}")
        self.run("sysctl", "-q", "-w", f"{key}={value}")

    def sysctl_value(self, key: str) -> str:
        if not _SYSCTL_KEY.fullmatch(key):
            raise ValueError(f"invalid sysctl key {key!r}")
        return self.run("sysctl", "-n", key).stdout.strip()

    # -- processes and deletion -------------------------------------------------------------

    def pids(self) -> list[int]:
        """Every process in the namespace (``ip netns pids``), started here or not."""
        done = _run(["ip", "netns", "pids", self.name], check=False)
        if done.returncode != 0:
            return []
        return sorted(int(word) for word in done.stdout.split())

    def stop_processes(self, deadline: float = STOP_DEADLINE) -> None:
        """Stop the processes started with ``popen`` (by recorded PID), then anything else
        still in the namespace: SIGTERM, ``deadline`` seconds, SIGKILL."""
        terminate((), children=self._children, deadline=deadline)
        for child in self._children:  # their pipes go with them (no ResourceWarning later)
            for pipe in (child.stdin, child.stdout, child.stderr):
                if pipe is not None:
                    pipe.close()
        if self.exists():
            terminate(self.pids(), deadline=deadline)

    def _delete_links(self) -> None:
        """Delete the namespace's links (veth pairs with both their ends) now: the kernel tears
        a deleted namespace down later, in the background, and a veth's other end (in the root
        namespace, say) would linger until then."""
        names = [link["ifname"] for link in self.links() if link.get("ifname") != "lo"]
        if names:
            commands = "".join(f"link del dev {name}\n" for name in names)
            _run(["ip", "-n", self.name, "-force", "-batch", "-"], check=False, input=commands)

    def delete(self, deadline: float = STOP_DEADLINE) -> None:
        """Stop every process, delete the namespace's links, the namespace and its state file.
        Idempotent."""
        if self._deleted:
            return
        self.stop_processes(deadline)
        if self.exists():
            self._delete_links()
            done = _run(["ip", "netns", "delete", self.name], check=False)
            if done.returncode != 0 and self.exists():
                raise CommandFailed(done.returncode, done.args, done.stdout, done.stderr)
        _state_path(self.name).unlink(missing_ok=True)
        self._deleted = True


def veth(a: Namespace, a_if: str, b: Namespace, b_if: str) -> None:
    """A veth pair, ``a_if`` in ``a`` and ``b_if`` in ``b``, both up.

    The pair is created directly inside the two namespaces, so the names only need to be unique
    there and nothing ever appears in the root namespace (no collision with parallel runs, no
    leftover if this process dies half-way).
    """
    check_ifname(a_if)
    check_ifname(b_if)
    _run(
        [
            "ip",
            "link",
            "add",
            "name",
            a_if,
            "netns",
            a.name,
            "type",
            "veth",
            "peer",
            "name",
            b_if,
            "netns",
            b.name,
        ]
    )
    a.set_up(a_if)
    b.set_up(b_if)


def veth_to_root(ns: Namespace, ns_if: str, root_if: str | None = None) -> str:
    """A veth pair between the root namespace and ``ns`` (``ns_if`` there), both up; the root
    side's name (``mgr<10 hex>`` unless given). It goes when ``ns`` is deleted: a veth pair
    dies with either end."""
    root_if = check_ifname(root_if or f"mgr{secrets.token_hex(5)}")
    check_ifname(ns_if)
    _run(["ip", "link", "add", "name", root_if, "type", "veth", "peer", "name", ns_if, "netns", ns.name])
    _run(["ip", "link", "set", "dev", root_if, "up"])
    ns.set_up(ns_if)
    return root_if


def cleanup_stale(prefix: str = NAME_PREFIX) -> list[str]:
    """Delete the namespaces (``prefix``...) whose recorded owner is dead, with their processes;
    the names deleted. Namespaces of live owners, and namespaces without a state file, are left
    alone."""
    if not STATE_DIR.is_dir():
        return []
    deleted = []
    for path in sorted(STATE_DIR.iterdir()):
        name = path.name
        if name.startswith(".") or not name.startswith(prefix):
            continue
        owner = read_owner(name)
        if owner is None or owner.alive:
            continue
        Namespace(name).delete()
        deleted.append(name)
    return deleted
