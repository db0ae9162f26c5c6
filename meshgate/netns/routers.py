"""Upstream routers inside a namespace: BIRD 2 and FRR 8 as the BGP peers of edges.

Each router keeps its configuration, control sockets, PID files and logs under its own
``workdir`` and never touches ``/etc`` or the system's sockets. Daemons run in the foreground
(their ``Popen`` is recorded by the namespace, so ``Namespace.delete`` stops them too) and also
write PID files, so a later command (a lab's ``down``) can stop them by PID.

- ``Bird``: ``bird -f -c CONF -s SOCK -P PIDFILE``; ECMP through ``merge paths`` in the kernel
  protocol; an import filter that honours graceful shutdown (community 65535:0 sets preference
  and local-pref to 0); queried with ``birdc -s SOCK`` (no JSON).
- ``Frr``: ``zebra`` then ``bgpd`` from ``/usr/lib/frr`` with ``-f``, ``-i``, ``-z``,
  ``--vty_socket``, ``-P 0`` (no TCP vty), ``--log file:`` and ``-u root -g frrvty``: FRR 8.4
  refuses to start as a user outside its vty group (``frrvty``), and getgrouplist(3) counts the
  primary group given with ``-g``, so root with group frrvty passes that check without running as
  the ``frr`` user (which could not reach a root-only temporary directory). FRR honours 65535:0
  by itself.

Graceful restart (RFC 4724) is off unless asked for: FRR 8.4 announces the capability by default
and BIRD, GR-aware by default, then keeps a peer's routes (stale) for 120 s after its session
drops without a NOTIFICATION, as it does when bgpd is stopped; with it off, a stopped or killed
peer's routes go at once.

Routers peer with edges (``Peer``, usually not exported to) and with each other
(``peer_routers``: eBGP both ways, each exporting what it learned and what it originates).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import re
import shutil
import subprocess
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from meshgate.netns.namespace import CommandFailed, Namespace, process_start_time, terminate, wait_until

BIRD: Final = "/usr/sbin/bird"
BIRDC: Final = "/usr/sbin/birdc"
FRR_DIR: Final = Path("/usr/lib/frr")
VTYSH: Final = "/usr/bin/vtysh"
FRR_CRASH_DIR: Final = Path("/var/tmp/frr")  # noqa: S108 - FRR's fixed path, a root-only directory
#: FRR 8.4 daemons must run as a member of this group (configure --enable-vty-group)
FRR_VTY_GROUP: Final = "frrvty"
START_DEADLINE: Final = 20.0
#: unix socket paths are limited to 107 bytes
_MAX_SOCKET_PATH: Final = 107
_DESCRIPTION = re.compile(r"[A-Za-z0-9 _.:/@()-]{0,80}")


@dataclass(frozen=True)
class Peer:
    """A BGP neighbour of a router.

    ``export``: whether the router sends its routes (learned and originated) to this peer; None
    takes the router's default (``export_to_peers``; edges are usually not sent anything).
    """

    address: str
    asn: int
    description: str = ""
    export: bool | None = None

    def __post_init__(self) -> None:
        ipaddress.IPv4Address(self.address)
        if not 1 <= self.asn <= 4_294_967_295:
            raise ValueError(f"invalid ASN {self.asn}")
        if not _DESCRIPTION.fullmatch(self.description):
            raise ValueError(f"invalid description {self.description!r}")


def _check_socket_path(path: Path) -> Path:
    if len(str(path).encode()) > _MAX_SOCKET_PATH:
        raise ValueError(f"socket path too long for a unix socket ({len(str(path))} > 107): {path}")
    return path


def _networks(networks: Sequence[str]) -> list[str]:
    return [str(ipaddress.IPv4Network(network)) for network in networks]


class UpstreamRouter(ABC):
    """What ``Bird`` and ``Frr`` have in common."""

    kind: str = "router"

    def __init__(
        self,
        ns: Namespace,
        workdir: Path,
        *,
        asn: int,
        router_id: str,
        peers: Sequence[Peer] = (),
        ecmp: bool = True,
        export_to_peers: bool = False,
        networks: Sequence[str] = (),
        hold_time: int = 9,
        keepalive_time: int = 3,
        graceful_restart: bool = False,
    ) -> None:
        if not 1 <= asn <= 4_294_967_295:
            raise ValueError(f"invalid ASN {asn}")
        if not 3 <= hold_time <= 65535 or not 1 <= keepalive_time <= hold_time // 3:
            raise ValueError(f"invalid timers: hold {hold_time}, keepalive {keepalive_time}")
        self.ns = ns
        self.workdir = Path(workdir).absolute()
        self.asn = asn
        self.router_id = str(ipaddress.IPv4Address(router_id))
        self.peers: list[Peer] = list(peers)
        self.ecmp = ecmp
        self.export_to_peers = export_to_peers
        self.networks = _networks(networks)
        self.hold_time = hold_time
        self.keepalive_time = keepalive_time
        self.graceful_restart = graceful_restart
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._processes: list[subprocess.Popen[bytes]] = []

    def exports_to(self, peer: Peer) -> bool:
        return self.export_to_peers if peer.export is None else peer.export

    def peer(self, address: str) -> Peer:
        for peer in self.peers:
            if peer.address == address:
                return peer
        raise KeyError(f"{self.kind} in {self.ns.name} has no peer {address}")

    @property
    def running(self) -> bool:
        return any(process.poll() is None for process in self._processes)

    def add_peer(self, peer: Peer) -> None:
        """Add a neighbour; applied at once when the router runs."""
        if any(existing.address == peer.address for existing in self.peers):
            raise ValueError(f"{self.kind} in {self.ns.name} already peers with {peer.address}")
        self.peers.append(peer)
        if self.running:
            self._apply_peer(peer)

    def wait_established(self, address: str, timeout: float = 30.0) -> float:
        """Seconds until the session with ``address`` is established (TimeoutError after
        ``timeout``)."""
        return wait_until(
            lambda: self.established(address),
            timeout,
            interval=0.05,
            what=f"BGP session {self.ns.name} ({self.kind}) -> {address} not established in {timeout} s",
        )

    def _start_daemon(self, argv: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            process = self.ns.popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
            )
        self._processes.append(process)
        return process

    def _wait_ready(self, process: subprocess.Popen[bytes], ready: Any, what: str, log: Path) -> None:
        def check() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"{what} exited with {process.returncode}: {self._tail(log)}")
            return bool(ready())

        try:
            wait_until(check, START_DEADLINE, interval=0.02, what=f"{what} not ready: {self._tail(log)}")
        except BaseException:
            self.stop()
            raise

    @staticmethod
    def _tail(log: Path, lines: int = 20) -> str:
        try:
            return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _stop(self, pid_files: Sequence[Path]) -> None:
        """Stop the daemons started here (by recorded PID), or those named by ``pid_files``
        when this object did not start them."""
        if self._processes:
            terminate((), children=list(reversed(self._processes)))
            self._processes.clear()
            return
        pids = []
        for pid_file in pid_files:
            try:
                pids.append(int(pid_file.read_text().split()[0]))
            except (OSError, ValueError, IndexError):
                continue
        # only processes that are in this router's namespace (a stale PID file may name anything)
        in_namespace = set(self.ns.pids()) if self.ns.exists() else set()
        terminate([pid for pid in pids if pid in in_namespace and process_start_time(pid) is not None])

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    @abstractmethod
    def established(self, peer_address: str) -> bool: ...

    @abstractmethod
    def _apply_peer(self, peer: Peer) -> None: ...


# -- BIRD -------------------------------------------------------------------------------------


class Bird(UpstreamRouter):
    """BIRD 2 as a BGP router in ``ns``."""

    kind = "bird"

    def __init__(
        self,
        ns: Namespace,
        workdir: Path,
        *,
        asn: int,
        router_id: str,
        peers: Sequence[Peer] = (),
        ecmp: bool = True,
        honour_graceful_shutdown: bool = True,
        export_to_peers: bool = False,
        networks: Sequence[str] = (),
        hold_time: int = 9,
        keepalive_time: int = 3,
        graceful_restart: bool = False,
    ) -> None:
        super().__init__(
            ns, workdir, asn=asn, router_id=router_id, peers=peers, ecmp=ecmp,
            export_to_peers=export_to_peers, networks=networks, hold_time=hold_time,
            keepalive_time=keepalive_time, graceful_restart=graceful_restart,
        )  # fmt: skip
        self.honour_graceful_shutdown = honour_graceful_shutdown
        self.config_path = self.workdir / "bird.conf"
        self.socket_path = _check_socket_path(self.workdir / "bird.ctl")
        self.pid_path = self.workdir / "bird.pid"
        self.log_path = self.workdir / "bird.log"

    @staticmethod
    def protocol_name(address: str) -> str:
        """The BIRD protocol of the session with ``address`` (``peer_10_0_0_2``)."""
        return "peer_" + str(ipaddress.IPv4Address(address)).replace(".", "_")

    def render(self) -> str:
        """The configuration file."""
        lines = [
            f'log "{self.log_path}" all;',
            f"router id {self.router_id};",
            "timeformat protocol iso long;",  # 'YYYY-MM-DD hh:mm:ss': the Info column is the 7th word
            "",
            "protocol device { scan time 10; }",
            'protocol direct { ipv4; interface "*"; }',
            "protocol kernel {",
            "  ipv4 { import none; export where source = RTS_BGP; };",
            f"  merge paths {'yes limit 16' if self.ecmp else 'no'};",
            "}",
        ]
        if self.networks:
            lines += ["protocol static originated {", "  ipv4;"]
            lines += [f"  route {network} unreachable;" for network in self.networks]
            lines += ["}"]
        lines += ["", "filter peer_import {"]
        if self.honour_graceful_shutdown:
            lines += ["  if (65535, 0) ~ bgp_community then { bgp_local_pref = 0; preference = 0; }"]
        lines += [
            "  accept;",
            "}",
            "",
            "filter peer_export {",
            "  if source ~ [RTS_BGP, RTS_STATIC] then accept;",
            "  reject;",
            "}",
        ]
        for peer in self.peers:
            lines += ["", *self._render_peer(peer)]
        return "\n".join(lines) + "\n"

    def _render_peer(self, peer: Peer) -> list[str]:
        export = "filter peer_export" if self.exports_to(peer) else "none"
        description = peer.description or f"{peer.address} AS{peer.asn}"
        return [
            f"protocol bgp {self.protocol_name(peer.address)} {{",
            f'  description "{description}";',
            f"  local as {self.asn};",
            f"  neighbor {peer.address} as {peer.asn};",
            f"  hold time {self.hold_time}; keepalive time {self.keepalive_time};",
            "  connect delay time 1; connect retry time 1; error wait time 1, 5;",
            f"  graceful restart {'aware' if self.graceful_restart else 'no'};",
            f"  ipv4 {{ import filter peer_import; export {export}; }};",
            "}",
        ]

    def write_config(self) -> Path:
        self.config_path.write_text(self.render())
        done = subprocess.run(
            [BIRD, "-p", "-c", str(self.config_path)], capture_output=True, text=True, timeout=30, check=False
        )
        if done.returncode != 0:
            raise ValueError(f"BIRD refuses {self.config_path}: {done.stderr.strip() or done.stdout.strip()}")
        return self.config_path

    def start(self) -> None:
        """Start BIRD and wait until its control socket answers."""
        self.write_config()
        self.socket_path.unlink(missing_ok=True)
        argv = [
            BIRD,
            "-f",
            "-c",
            str(self.config_path),
            "-s",
            str(self.socket_path),
            "-P",
            str(self.pid_path),
        ]
        process = self._start_daemon(argv, self.workdir / "bird.out")
        self._wait_ready(process, self._answers, "bird", self.log_path)

    def _answers(self) -> bool:
        if not self.socket_path.exists():
            return False
        done = subprocess.run(
            [BIRDC, "-s", str(self.socket_path), "show", "status"],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
        return done.returncode == 0 and "Daemon is up and running" in done.stdout

    def stop(self) -> None:
        self._stop([self.pid_path])

    def show(self, cmd: str) -> str:
        """``birdc -s SOCK CMD`` (e.g. ``show route for 203.0.113.10/32 all``)."""
        done = subprocess.run(
            [BIRDC, "-s", str(self.socket_path), *cmd.split()],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise CommandFailed(done.returncode, done.args, done.stdout, done.stderr)
        return done.stdout

    def configure(self) -> None:
        """Reload the configuration (after peers were added)."""
        self.write_config()
        out = self.show(f'configure "{self.config_path}"')
        if "Reconfigured" not in out and "Reconfiguration in progress" not in out:
            raise RuntimeError(f"BIRD reconfiguration failed: {out.strip()}")

    def _apply_peer(self, peer: Peer) -> None:
        self.configure()

    def protocols(self) -> dict[str, str]:
        """Protocol name -> its info column (``Established``, ``Active``, ...)."""
        out: dict[str, str] = {}
        for line in self.show("show protocols").splitlines():
            words = line.split()
            if len(words) >= 6 and words[1] == "BGP":
                # name proto table state since (date time) info...
                out[words[0]] = " ".join(words[6:])
        return out

    def established(self, peer_address: str) -> bool:
        self.peer(peer_address)
        return self.protocols().get(self.protocol_name(peer_address), "").startswith("Established")


# -- FRR --------------------------------------------------------------------------------------


class Frr(UpstreamRouter):
    """FRR 8 (zebra + bgpd) as a BGP router in ``ns``."""

    kind = "frr"

    def __init__(
        self,
        ns: Namespace,
        workdir: Path,
        *,
        asn: int,
        router_id: str,
        peers: Sequence[Peer] = (),
        ecmp: bool = True,
        maximum_paths: int = 16,
        export_to_peers: bool = False,
        networks: Sequence[str] = (),
        hold_time: int = 9,
        keepalive_time: int = 3,
        graceful_restart: bool = False,
    ) -> None:
        super().__init__(
            ns, workdir, asn=asn, router_id=router_id, peers=peers, ecmp=ecmp,
            export_to_peers=export_to_peers, networks=networks, hold_time=hold_time,
            keepalive_time=keepalive_time, graceful_restart=graceful_restart,
        )  # fmt: skip
        if not 1 <= maximum_paths <= 256:
            raise ValueError(f"invalid maximum_paths {maximum_paths}")
        self.maximum_paths = maximum_paths if ecmp else 1
        self.vty_dir = self.workdir
        self.zserv_path = _check_socket_path(self.workdir / "zserv.api")
        _check_socket_path(self.workdir / "zebra.vty")

    def _path(self, daemon: str, suffix: str) -> Path:
        return self.workdir / f"{daemon}.{suffix}"

    def render_zebra(self) -> str:
        return f"hostname {self.ns.name}\n!\n"

    def render_bgpd(self) -> str:
        lines = [
            f"hostname {self.ns.name}",
            "!",
            "route-map MG-NOTHING deny 10",
            "!",
            f"router bgp {self.asn}",
            f" bgp router-id {self.router_id}",
            " no bgp ebgp-requires-policy",
            " no bgp network import-check",
            " no bgp default ipv4-unicast",
            f" timers bgp {self.keepalive_time} {self.hold_time}",
            " coalesce-time 100",  # update groups wait 1 s by default before the first update
        ]
        if not self.graceful_restart:
            lines.append(" bgp graceful-restart-disable")
        if self.ecmp:
            lines.append(" bgp bestpath as-path multipath-relax")
        for peer in self.peers:
            lines += self._neighbor_lines(peer)
        lines.append(" address-family ipv4 unicast")
        lines += [f"  network {network}" for network in self.networks]
        lines.append(f"  maximum-paths {self.maximum_paths}")
        for peer in self.peers:
            lines += self._af_lines(peer)
        lines += [" exit-address-family", "!"]
        return "\n".join(lines) + "\n"

    def _neighbor_lines(self, peer: Peer) -> list[str]:
        lines = [
            f" neighbor {peer.address} remote-as {peer.asn}",
            f" neighbor {peer.address} timers connect 1",
            f" neighbor {peer.address} advertisement-interval 0",
        ]
        if peer.description:
            lines.append(f" neighbor {peer.address} description {peer.description}")
        return lines

    def _af_lines(self, peer: Peer) -> list[str]:
        lines = [f"  neighbor {peer.address} activate"]
        if not self.exports_to(peer):
            lines.append(f"  neighbor {peer.address} route-map MG-NOTHING out")
        return lines

    def write_config(self) -> None:
        self._path("zebra", "conf").write_text(self.render_zebra())
        self._path("bgpd", "conf").write_text(self.render_bgpd())

    def _daemon_argv(self, daemon: str) -> list[str]:
        return [
            str(FRR_DIR / daemon),
            "-f", str(self._path(daemon, "conf")),
            "-i", str(self._path(daemon, "pid")),
            "-z", str(self.zserv_path),
            "--vty_socket", str(self.vty_dir),
            "-P", "0",  # no TCP vty
            "-u", "root", "-g", FRR_VTY_GROUP,
            "--log", f"file:{self._path(daemon, 'log')}",
        ]  # fmt: skip

    def start(self) -> None:
        """Start zebra, then bgpd, and wait until both answer on their vty sockets."""
        self.write_config()
        for daemon in ("zebra", "bgpd"):
            self._path(daemon, "vty").unlink(missing_ok=True)
        self.zserv_path.unlink(missing_ok=True)
        zebra = self._start_daemon(self._daemon_argv("zebra"), self._path("zebra", "out"))
        self._wait_ready(
            zebra,
            lambda: self.zserv_path.exists() and self._answers("zebra", "show version"),
            "zebra",
            self._path("zebra", "out"),
        )
        bgpd = self._start_daemon(self._daemon_argv("bgpd"), self._path("bgpd", "out"))
        self._wait_ready(
            bgpd, lambda: self._answers("bgpd", "show bgp summary json"), "bgpd", self._path("bgpd", "out")
        )

    def _answers(self, daemon: str, cmd: str) -> bool:
        if not self._path(daemon, "vty").exists():
            return False
        done = subprocess.run(
            [VTYSH, "--vty_socket", str(self.vty_dir), "-d", daemon, "-c", cmd],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
        return done.returncode == 0

    def stop(self) -> None:
        """Stop bgpd and zebra (which removes its kernel routes), and the crash-log directories
        FRR keeps per daemon PID in /var/tmp/frr (it removes them itself on a clean exit only)."""
        pids = {}
        for daemon in ("bgpd", "zebra"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                pids[daemon] = int(self._path(daemon, "pid").read_text().split()[0])
        self._stop([self._path("bgpd", "pid"), self._path("zebra", "pid")])
        for daemon, pid in pids.items():
            shutil.rmtree(FRR_CRASH_DIR / f"{daemon}.{pid}", ignore_errors=True)

    def vtysh(self, *cmds: str) -> str:
        """``vtysh --vty_socket DIR -c CMD ...`` (several commands run in one session)."""
        argv = [VTYSH, "--vty_socket", str(self.vty_dir)]
        for cmd in cmds:
            argv += ["-c", cmd]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        if done.returncode != 0:
            raise CommandFailed(done.returncode, done.args, done.stdout, done.stderr)
        return done.stdout

    def vtysh_json(self, cmd: str) -> Any:
        return json.loads(self.vtysh(cmd) or "{}")

    def bgp_route(self, prefix: str) -> dict[str, Any]:
        """``show bgp ipv4 unicast PREFIX json`` ({} when bgpd has no such route)."""
        network = ipaddress.IPv4Network(prefix)
        route: dict[str, Any] = self.vtysh_json(f"show bgp ipv4 unicast {network} json")
        return route

    def established(self, peer_address: str) -> bool:
        self.peer(peer_address)
        address = str(ipaddress.IPv4Address(peer_address))
        state = self.vtysh_json(f"show bgp neighbors {address} json").get(address, {})
        return bool(state.get("bgpState") == "Established")

    def _apply_peer(self, peer: Peer) -> None:
        self.write_config()
        lines = ["configure terminal", f"router bgp {self.asn}"]
        lines += [line.strip() for line in self._neighbor_lines(peer)]
        lines += ["address-family ipv4 unicast"]
        lines += [line.strip() for line in self._af_lines(peer)]
        self.vtysh(*lines)


Router = Bird | Frr


def peer_routers(a: UpstreamRouter, a_address: str, b: UpstreamRouter, b_address: str) -> None:
    """eBGP between two routers (``a_address`` is ``a``'s address on the link to ``b``), each
    exporting to the other what it learned and what it originates."""
    if a.asn == b.asn:
        raise ValueError(f"routers peer over eBGP: both are AS{a.asn}")
    a.add_peer(Peer(b_address, b.asn, description=f"router {b.ns.name}", export=True))
    b.add_peer(Peer(a_address, a.asn, description=f"router {a.ns.name}", export=True))
