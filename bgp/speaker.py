"""``Speaker``: the asyncio component that owns ExaBGP.

Process tree (see bgp/README.md)::

    controller ── exabgp server exabgp.conf     (PR_SET_PDEATHSIG=SIGTERM, own process group)
                    └── python bgp/helper.py api.sock ══ unix socket ══ controller

The controller listens on ``workdir/api.sock``; ExaBGP starts the helper, which connects and
relays ExaBGP's events and acks to us and our commands to ExaBGP. One command is in flight at a
time and waits for its ``done`` / ``error``. If ExaBGP exits, the helper disconnects or an ack
does not come, this ExaBGP is stopped (its sessions close, so its routes go) and a new one is
started after a jittered backoff; the routes that should be announced are announced again.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import socket
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bgp import commands, events, exabgp_config, exabgp_env, neighbors, process, values
from bgp.backoff import Backoff
from bgp.commands import RouteAttributes
from bgp.exabgp_config import ConfigInvalid
from bgp.neighbors import NeighborTable
from bgp.settings import BgpSettings, Neighbor
from meshgate.clock import Clock, SystemClock
from meshgate.lifecycle import OwnedTask

__all__ = ["ConfigInvalid", "Speaker", "SpeakerError"]

log = logging.getLogger(__name__)

HELPER = Path(__file__).with_name("helper.py")
LINE_LIMIT = 1 << 20
_SUN_PATH_MAX = 107


class SpeakerError(Exception):
    """A command did not take effect: ExaBGP refused it, is not running, or did not answer."""


@dataclass
class _Run:
    """One ExaBGP process and its helper's connection."""

    proc: asyncio.subprocess.Process
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    helper: process.Pidfd | None
    started: float
    acks: collections.deque[asyncio.Future[str]] = field(default_factory=collections.deque)
    announced: dict[str, RouteAttributes] = field(default_factory=dict)
    # neighbor -> routes ExaBGP refused for it while its session was not established (it cannot
    # resolve `next-hop self` before it knows the session's local address: no route to the
    # neighbor yet); sent again when the session comes up
    deferred: dict[str, set[str]] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    abort: asyncio.Event = field(default_factory=asyncio.Event)
    settled: asyncio.Event = field(default_factory=asyncio.Event)  # ready, or ended before
    ready: bool = False
    closed: bool = False


class Speaker:
    def __init__(
        self,
        settings: BgpSettings,
        workdir: Path,
        *,
        exabgp: str = "exabgp",
        on_change: Callable[[], None] | None = None,
        clock: Clock | None = None,
        ack_timeout: float = 10.0,
        connect_timeout: float = 30.0,
        stop_timeout: float = 5.0,
        backoff: Backoff | None = None,
    ) -> None:
        self._settings = settings
        self._workdir = workdir
        self._exabgp = exabgp
        self._on_change = on_change
        self._clock = clock or SystemClock()
        self._ack_timeout = ack_timeout
        self._connect_timeout = connect_timeout
        self._stop_timeout = stop_timeout
        self._backoff = backoff or Backoff()
        self._neighbors = NeighborTable(settings.neighbors, self._now())
        self._wanted: dict[str, RouteAttributes] = {}
        self._run: _Run | None = None
        self._listener: socket.socket | None = None
        self._argv: list[str] = []
        self._env: dict[str, str] = {}
        self._lock = asyncio.Lock()
        self._supervisor = OwnedTask("bgp-speaker")
        self._restarts = 0
        self._started = False

    # -- state

    @property
    def running(self) -> bool:
        """ExaBGP runs, its helper is connected and the wanted routes were handed to it."""
        run = self._run
        return run is not None and run.ready and not run.closed

    @property
    def restarts(self) -> int:
        return self._restarts

    @property
    def neighbors(self) -> NeighborTable:
        """Each session's state; ``since`` is on the clock's ``monotonic()``."""
        return self._neighbors

    @property
    def announced(self) -> dict[str, RouteAttributes]:
        """Routes the running ExaBGP acknowledged (it sends them on every established session
        of their family); empty while it is not running."""
        run = self._run
        return {} if run is None or run.closed else dict(run.announced)

    @property
    def wanted(self) -> dict[str, RouteAttributes]:
        """Routes to announce: what ``announce`` asked for and ``withdraw`` did not take back,
        announced again by every new ExaBGP."""
        return dict(self._wanted)

    def metric_lines(self) -> list[str]:
        """Prometheus lines: speaker up and restarts, routes announced, each session's state and
        flaps (see ``bgp.neighbors.metric_lines``)."""
        return neighbors.metric_lines(
            self._neighbors,
            speaker_up=self.running,
            restarts=self._restarts,
            announced_routes=len(self.announced),
        )

    @property
    def log_path(self) -> Path:
        return self._workdir / "exabgp.log"

    # -- lifecycle

    async def start(self) -> None:
        """Validate the configuration (``ConfigInvalid`` before anything starts), start ExaBGP
        and wait for its helper to connect (``SpeakerError`` if it does not in time)."""
        if self._started:
            raise RuntimeError("speaker already started")
        exabgp = exabgp_config.find_exabgp(self._exabgp)
        if exabgp is None:
            raise SpeakerError(f"{self._exabgp!r} not found on PATH nor beside {sys.executable}")
        self._workdir.mkdir(parents=True, exist_ok=True)
        sock_path = self._workdir / "api.sock"
        if len(os.fsencode(sock_path)) > _SUN_PATH_MAX:
            raise SpeakerError(
                f"{sock_path} is too long for a unix socket path ({_SUN_PATH_MAX} bytes at most)"
            )
        text = exabgp_config.render(
            self._settings, api_argv=[sys.executable, "-I", "-S", str(HELPER), str(sock_path)]
        )
        await asyncio.to_thread(exabgp_config.validate, text, exabgp=exabgp)
        conf = self._workdir / "exabgp.conf"
        conf.write_text(text)
        env_file = self._workdir / "exabgp.env"
        env_file.write_text(exabgp_env.ENV_FILE_TEXT)
        self._env = exabgp_env.environment(os.environ, env_file=env_file)
        self._argv = [exabgp, "server", str(conf)]
        self._listener = _listen(sock_path)
        self._started = True
        try:
            self._run = run = await self._launch()
        except BaseException:
            self._close_listener()
            self._started = False
            raise
        self._supervisor.start(self._supervise())
        # the supervisor reads ExaBGP's answers while it hands over routes asked for before start
        await run.settled.wait()
        if not run.ready:
            await self.stop()
            raise SpeakerError(f"ExaBGP stopped as it started: {self._tail()}")

    async def stop(self) -> None:
        """Stop ExaBGP (SIGTERM: it closes its sessions; SIGKILL after ``stop_timeout``) and its
        helper, and close the socket. Idempotent."""
        await self._supervisor.stop()
        run, self._run = self._run, None
        if run is not None:
            await self._close(run, "speaker stopped")
        self._close_listener()
        self._started = False

    # -- commands

    async def announce(self, prefix: str, attrs: RouteAttributes) -> None:
        """Announce ``prefix`` (a VIP address is its /32 or /128) to every neighbor of its family.

        Remembered first: a new ExaBGP announces it even if this raises ``SpeakerError`` for
        not running or a missing ack. ExaBGP answering ``error`` for an established session
        raises and forgets it; for a session that is not established (ExaBGP 5.0.15 cannot
        resolve ``next-hop self`` before it has a local address for it) the route is sent again
        when that session comes up."""
        key = commands.route_prefix(prefix)
        if not isinstance(attrs, RouteAttributes):
            raise ValueError("attrs must be RouteAttributes")
        targets = self._targets(key)
        self._wanted[key] = attrs
        try:
            await self._send_route(key, attrs, targets)
        except _Refused as exc:
            if self._wanted.get(key) == attrs:
                del self._wanted[key]
            raise SpeakerError(str(exc)) from None

    async def withdraw(self, prefix: str) -> None:
        """Withdraw ``prefix`` from every neighbor of its family. Forgotten first: no new ExaBGP
        announces it, whatever this raises."""
        key = commands.route_prefix(prefix)
        targets = self._targets(key)
        self._wanted.pop(key, None)
        lines = [commands.withdraw(key, neighbor=n.address) for n in targets]
        async with self._lock:
            run = self._ready_run()
            for deferred in run.deferred.values():
                deferred.discard(key)
            try:
                for line in lines:
                    await self._command(run, line)
            except _Refused as exc:
                raise SpeakerError(str(exc)) from None
            run.announced.pop(key, None)

    def _targets(self, key: str) -> list[Neighbor]:
        version = values.prefix(key).version
        targets = [n for n in self._settings.neighbors if n.version == version]
        if not targets:
            raise SpeakerError(f"no IPv{version} neighbor to send {key} to")
        return targets

    async def _send_route(self, key: str, attrs: RouteAttributes, targets: list[Neighbor]) -> None:
        """To each target; ``_Refused`` if ExaBGP refused it for an established session."""
        async with self._lock:
            run = self._ready_run()
            refused: list[str] = []
            for neighbor in targets:
                line = commands.announce(
                    key, attrs, local_asn=self._settings.local_asn, neighbor=neighbor.address
                )
                try:
                    await self._command(run, line)
                except _Refused as exc:
                    status = self._neighbors.get(neighbor.address)
                    if status is not None and status.state == "established":
                        refused.append(str(exc))
                        continue
                    log.info(
                        "route deferred until the session is up",
                        extra={"prefix": key, "neighbor": neighbor.address},
                    )
                    run.deferred.setdefault(neighbor.address, set()).add(key)
                else:
                    run.deferred.get(neighbor.address, set()).discard(key)
            if refused:
                raise _Refused("; ".join(refused))
            run.announced[key] = attrs

    async def _send_deferred(self, run: _Run) -> None:
        """Routes refused for sessions that were not up, sent again as each comes up."""
        while True:
            await run.wake.wait()
            run.wake.clear()
            async with self._lock:
                for address in self._neighbors.established():
                    for key in sorted(run.deferred.get(address, ())):
                        attrs = self._wanted.get(key)
                        run.deferred[address].discard(key)
                        if attrs is None or run.closed:
                            continue
                        line = commands.announce(
                            key, attrs, local_asn=self._settings.local_asn, neighbor=address
                        )
                        try:
                            await self._command(run, line)
                        except (SpeakerError, _Refused) as exc:
                            log.error(
                                "a deferred route was refused", extra={"prefix": key, "error": str(exc)}
                            )

    def _ready_run(self) -> _Run:
        run = self._run
        if run is None or run.closed:
            raise SpeakerError("ExaBGP is not running")
        return run

    async def _command(self, run: _Run, line: str) -> None:
        """Send one line and wait for its ack (the caller holds the lock: acks are matched in
        order, one command in flight)."""
        ack: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        run.acks.append(ack)
        try:
            run.writer.write(line.encode("ascii") + b"\n")
            await run.writer.drain()
        except (ConnectionError, RuntimeError) as exc:
            run.abort.set()
            raise SpeakerError(f"ExaBGP's helper is gone: {exc}") from None
        try:
            async with asyncio.timeout(self._ack_timeout):
                answer = await asyncio.shield(ack)
        except TimeoutError:
            log.error(
                "no ack from ExaBGP: restarting it", extra={"command": line, "timeout": self._ack_timeout}
            )
            run.abort.set()  # the acks can no longer be matched to commands
            raise SpeakerError(f"ExaBGP did not answer {line!r} within {self._ack_timeout}s") from None
        if answer == "closed":
            raise SpeakerError(f"ExaBGP stopped before answering {line!r}")
        if answer != "done":
            raise _Refused(f"ExaBGP answered {answer!r} to {line!r} (see {self.log_path})")

    # -- supervision

    async def _launch(self) -> _Run:
        proc = await process.spawn(self._argv, env=self._env, cwd=self._workdir, log=self.log_path)
        log.info("exabgp started", extra={"pid": proc.pid})
        try:
            conn, helper_pid = await self._accept(proc)
            reader, writer = await asyncio.open_unix_connection(sock=conn, limit=LINE_LIMIT)
        except BaseException:
            await process.terminate(proc, self._stop_timeout)
            raise
        helper = None
        with contextlib.suppress(OSError):  # gone already: the reader sees end of file at once
            helper = process.Pidfd(helper_pid)
        return _Run(proc, reader, writer, helper, started=self._clock.monotonic())

    async def _accept(self, proc: asyncio.subprocess.Process) -> tuple[socket.socket, int]:
        """The helper's connection: from a child of this ExaBGP, within ``connect_timeout``."""
        listener = self._listener
        assert listener is not None
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                while True:
                    accepting = asyncio.ensure_future(loop.sock_accept(listener))
                    exiting = asyncio.ensure_future(proc.wait())
                    try:
                        await asyncio.wait({accepting, exiting}, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        for waiter in (accepting, exiting):
                            waiter.cancel()
                        await asyncio.gather(accepting, exiting, return_exceptions=True)
                    if not accepting.cancelled() and accepting.exception() is None:
                        conn, _ = accepting.result()
                        pid = _peer_pid(conn)
                        if _parent_of(pid) == proc.pid:
                            return conn, pid
                        log.warning("refused an API connection from a stranger", extra={"peer_pid": pid})
                        conn.close()
                    elif proc.returncode is not None:
                        raise SpeakerError(
                            f"ExaBGP exited with {proc.returncode} before its helper connected: {self._tail()}"
                        )
        except TimeoutError:
            raise SpeakerError(
                f"ExaBGP's helper did not connect within {self._connect_timeout}s: {self._tail()}"
            ) from None

    async def _supervise(self) -> None:
        try:
            while True:
                run = self._run
                assert run is not None
                reason = await self._serve(run)
                log.warning("exabgp lost: restarting it", extra={"reason": reason})
                self._run = None
                await self._close(run, reason)
                ran_for = self._clock.monotonic() - run.started
                while self._run is None:
                    await asyncio.sleep(self._backoff.next_delay(ran_for))  # the backoff itself
                    try:
                        self._run = await self._launch()
                    except (SpeakerError, OSError) as exc:
                        log.error("exabgp restart failed", extra={"error": str(exc)})
                        ran_for = 0.0
                self._restarts += 1
        finally:
            run, self._run = self._run, None
            if run is not None:
                await self._close(run, "speaker stopped")

    async def _serve(self, run: _Run) -> str:
        """Read events (and announce the wanted routes) until the helper disconnects, ExaBGP
        exits or the run is aborted; why it ended."""
        reading = asyncio.ensure_future(self._read(run))
        exiting = asyncio.ensure_future(run.proc.wait())
        aborting = asyncio.ensure_future(run.abort.wait())
        starting = asyncio.ensure_future(self._come_up(run))
        deferring = asyncio.ensure_future(self._send_deferred(run))
        ends = {reading, exiting, aborting, deferring}
        try:
            done, _ = await asyncio.wait(ends | {starting}, return_when=asyncio.FIRST_COMPLETED)
            if not done & ends:
                if starting.exception() is not None:
                    log.error("exabgp start-up failed", exc_info=starting.exception())
                    run.abort.set()
                await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (reading, exiting, aborting, starting, deferring):
                waiter.cancel()
            await asyncio.gather(reading, exiting, aborting, starting, deferring, return_exceptions=True)
            run.settled.set()
        if run.proc.returncode is not None:
            return f"exabgp exited with {run.proc.returncode}"
        if run.abort.is_set():
            return "no answer from exabgp"
        if deferring.done() and not deferring.cancelled() and deferring.exception() is not None:
            log.error("sending deferred routes failed", exc_info=deferring.exception())
            return "a bug in the speaker"
        return "the API helper disconnected"

    async def _come_up(self, run: _Run) -> None:
        """Hand the wanted routes to a new ExaBGP, then report it running."""
        for key, attrs in list(self._wanted.items()):
            try:
                await self._send_route(key, attrs, self._targets(key))
            except (SpeakerError, _Refused) as exc:
                log.error("could not announce a route again", extra={"prefix": key, "error": str(exc)})
        if run.closed or run.abort.is_set():
            return
        run.ready = True
        run.settled.set()
        log.info("exabgp running", extra={"pid": run.proc.pid, "restarts": self._restarts})
        self._changed()

    async def _read(self, run: _Run) -> None:
        while True:
            try:
                line = await run.reader.readline()
            except ValueError:
                log.warning("skipped an over-long line from exabgp")
                continue
            except ConnectionError:
                return
            if not line:
                return
            self._handle(run, events.parse(line))

    def _handle(self, run: _Run, event: events.Event | None) -> None:
        if isinstance(event, events.Ack):
            while run.acks:
                ack = run.acks.popleft()
                if not ack.done():
                    ack.set_result(event.kind)
                    return
            log.warning("an ack from exabgp for no command", extra={"ack": event.kind})
        elif isinstance(event, events.NeighborChange):
            if self._neighbors.apply(event, self._now()):
                if event.state == "up" and run.deferred.get(event.peer):
                    run.wake.set()
                log.info(
                    "bgp session",
                    extra={"neighbor": event.peer, "state": event.state, "reason": event.reason},
                )
                self._changed()
        elif isinstance(event, events.Notification):
            self._neighbors.apply(event, self._now())
            log.info(
                "bgp notification",
                extra={
                    "neighbor": event.peer,
                    "direction": event.direction,
                    "code": event.code,
                    "subcode": event.subcode,
                },
            )
        elif isinstance(event, events.SpeakerShutdown):
            log.info("exabgp is shutting down")

    async def _close(self, run: _Run, reason: str) -> None:
        """Stop ``run``'s ExaBGP and helper. Its sessions are reported down first: whatever
        happens next, nothing is claimed up that may not be."""
        run.closed = True
        for ack in run.acks:
            if not ack.done():
                ack.set_result("closed")
        run.acks.clear()
        if self._neighbors.all_down(reason, self._now()) or run.ready:
            self._changed()
        await process.terminate(run.proc, self._stop_timeout)
        run.writer.close()  # the helper sees end of file and exits, if ExaBGP's end did not do it
        if run.helper is not None:
            if not await run.helper.wait(self._stop_timeout):
                log.warning("the API helper outlived exabgp: killing it", extra={"pid": run.helper.pid})
                run.helper.kill()
                await run.helper.wait(self._stop_timeout)
            run.helper.close()
        with contextlib.suppress(ConnectionError):
            await run.writer.wait_closed()

    # -- plumbing

    def _changed(self) -> None:
        if self._on_change is None:
            return
        try:
            self._on_change()
        except Exception:
            log.exception("on_change failed")

    def _now(self) -> float:
        return self._clock.monotonic()

    def _tail(self, lines: int = 8) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no exabgp.log)"
        return " | ".join(text.strip().splitlines()[-lines:])

    def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
            with contextlib.suppress(FileNotFoundError):
                (self._workdir / "api.sock").unlink()


class _Refused(Exception):
    """ExaBGP answered ``error``."""


def _listen(path: Path) -> socket.socket:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # left by a controller that was killed
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(path))
        path.chmod(0o600)  # the controller's and ExaBGP's (same user); connections are checked too
        listener.listen(4)
        listener.setblocking(False)
    except BaseException:
        listener.close()
        raise
    return listener


def _peer_pid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, _uid, _gid = struct.unpack("3i", creds)
    return int(pid)


def _parent_of(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    return None
