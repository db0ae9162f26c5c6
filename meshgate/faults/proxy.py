"""``FaultProxy``: a TCP relay that injects faults (delay, jitter, bandwidth caps, resets,
stalls, refusals) between two endpoints, e.g. an edge and a zone ingress. The kernel here has no
netem; this is its stand-in at L4.

Each accepted connection gets an upstream connection to ``target``; every chunk read on one
side is scheduled (``faults.schedule``) and written to the other side when due, by one timer per
direction. Nothing is reordered; an end of stream (FIN) follows the last byte before it, a reset
(from a peer) is passed on as a reset.

Backpressure: a direction holding more than ``HIGH_WATER`` bytes not yet delivered stops reading
its source until it is down to ``LOW_WATER``; a destination whose transport buffer is full
(``pause_writing``) stops reading its source too. A connection therefore holds at most about
``HIGH_WATER`` plus one read plus the transport's buffer per direction, whatever the faults.

``set(faults)`` applies to new and open connections: delay, jitter and bandwidth to what is read
from then on, ``stall`` at once (both sides stop reading, nothing is delivered until it is
cleared), ``reset_after`` at once to connections already past it. Resets are sent with
SO_LINGER 0, so the peer's next read fails with ECONNRESET.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, cast

from meshgate.faults.faults import Faults, Lane, eof_time, jitter_offset, schedule

HIGH_WATER: Final = 256 * 1024
LOW_WATER: Final = 64 * 1024
CONNECT_TIMEOUT: Final = 10.0
#: the shortest timer set: a piece due sooner waits this long (lateness over spinning)
MIN_TIMER: Final = 0.001

_DATA: Final = 0
_EOF: Final = 1
_RESET: Final = 2

_QUEUE = "queue"
_WRITE = "write"
_STALL = "stall"
_CONNECTING = "connecting"


def send_reset(transport: asyncio.Transport | None) -> None:
    """Close ``transport`` with a TCP reset (SO_LINGER 0), dropping what it still buffers."""
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


@dataclass
class ProxyStats:
    accepted: int = 0  # connections accepted (refused ones included)
    refused: int = 0  # closed at once by ``refuse``
    resets: int = 0  # connections reset by the proxy (reset_after, reset_existing)
    upstream_errors: int = 0  # the target could not be reached
    bytes_to_target: int = 0
    bytes_to_client: int = 0


class _Side(asyncio.Protocol):
    """The protocol of one transport of a relayed connection."""

    def __init__(self, proxy: FaultProxy, connection: _Connection | None = None) -> None:
        self.proxy = proxy
        self.connection = connection
        self.transport: asyncio.Transport | None = None
        self.holds: set[str] = set()
        self.gone = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=HIGH_WATER, low=LOW_WATER)
        if self.connection is None:
            self.proxy._accepted(self)
        else:
            self.connection._upstream_made(self)

    def data_received(self, data: bytes) -> None:
        if self.connection is not None:
            self.connection._received(self, data)

    def eof_received(self) -> bool:
        if self.connection is not None:
            self.connection._eof(self)
        return True  # keep the other direction open (half-close)

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = True
        if self.connection is not None:
            self.connection._lost(self, exc)

    def pause_writing(self) -> None:
        if self.connection is not None:
            self.connection._write_paused(self, True)

    def resume_writing(self) -> None:
        if self.connection is not None:
            self.connection._write_paused(self, False)

    def hold(self, reason: str) -> None:
        if not self.holds and self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()
        self.holds.add(reason)

    def release(self, reason: str) -> None:
        if reason not in self.holds:
            return
        self.holds.discard(reason)
        if not self.holds and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()


class _Direction:
    """Bytes from ``src`` to ``dst``, scheduled and not yet delivered."""

    def __init__(self, name: str, src: _Side | None, dst: _Side | None) -> None:
        self.name = name
        self.src = src
        self.dst = dst
        self.lane = Lane()
        self.queue: deque[tuple[float, int, bytes]] = deque()
        self.queued = 0
        self.timer: asyncio.TimerHandle | None = None
        self.eof_read = False
        self.finished = False

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class _Connection:
    """One client connection and its upstream connection."""

    def __init__(self, proxy: FaultProxy, down: _Side) -> None:
        self.proxy = proxy
        self.loop = proxy._loop
        self.clock = proxy._clock
        self.down = down
        self.up: _Side | None = None
        self.to_up = _Direction("to_target", down, None)
        self.to_down = _Direction("to_client", None, down)  # its source: the upstream, once connected
        self.total = 0
        self.resetting = False
        self.closed = False
        self.stalled = False
        down.connection = self

    # -- upstream ---------------------------------------------------------------------------

    def _upstream_made(self, up: _Side) -> None:
        if self.closed:
            send_reset(up.transport)
            return
        self.up = up
        self.to_up.dst = up
        self.to_down.src = up
        if self.stalled:
            up.hold(_STALL)
        self.down.release(_CONNECTING)
        self._arm(self.to_up)

    def upstream_failed(self) -> None:
        self.proxy.stats.upstream_errors += 1
        self._close(reset=True)

    # -- events -----------------------------------------------------------------------------

    def _direction_from(self, side: _Side) -> _Direction:
        return self.to_up if side is self.down else self.to_down

    def _received(self, side: _Side, data: bytes) -> None:
        if self.closed or self.resetting:
            return
        direction = self._direction_from(side)
        faults = self.proxy.faults
        limit = faults.reset_after
        if limit is not None and self.total + len(data) >= limit:
            data = data[: max(0, limit - self.total)]
            self.resetting = True
        self.total += len(data)
        now = self.clock()
        jitter = jitter_offset(faults.jitter, self.proxy._rng.random()) if faults.jitter else 0.0
        direction.lane, pieces = schedule(direction.lane, now, len(data), faults, jitter)
        if len(pieces) == 1:
            direction.queue.append((pieces[0].at, _DATA, data))
        else:
            view = memoryview(data)
            direction.queue.extend(
                (piece.at, _DATA, bytes(view[piece.start : piece.end])) for piece in pieces
            )
        direction.queued += len(data)
        if self.resetting:
            at = max(now, direction.lane.last_delivery)
            direction.queue.append((at, _RESET, b""))
            self.down.hold(_QUEUE)
            if self.up is not None:
                self.up.hold(_QUEUE)
        elif direction.queued >= HIGH_WATER:
            side.hold(_QUEUE)
        self._arm(direction)

    def _eof(self, side: _Side) -> None:
        direction = self._direction_from(side)
        if self.closed or direction.eof_read:
            return
        direction.eof_read = True
        at = eof_time(direction.lane, self.clock(), self.proxy.faults)
        direction.lane = Lane(direction.lane.link_free, at)
        direction.queue.append((at, _EOF, b""))
        self._arm(direction)

    def _lost(self, side: _Side, exc: Exception | None) -> None:
        if self.closed:
            return
        if exc is not None:  # a reset (or an error): pass it on
            self._close(reset=True)
            return
        towards = self.to_down if side is self.down else self.to_up
        towards.cancel()
        towards.queue.clear()
        towards.queued = 0
        towards.finished = True
        self._eof(side)  # what it sent before closing is still delivered
        self._maybe_close()

    def _write_paused(self, side: _Side, paused: bool) -> None:
        other = self.up if side is self.down else self.down
        if other is None:
            return
        if paused:
            other.hold(_WRITE)
        else:
            other.release(_WRITE)

    # -- delivery ---------------------------------------------------------------------------

    def _arm(self, direction: _Direction) -> None:
        if direction.timer is not None or not direction.queue or self.stalled or self.closed:
            return
        wait = direction.queue[0][0] - self.clock()
        if wait <= 0:
            self._flush(direction)
        else:
            # Never early: the due time is checked again when the timer fires (uvloop's timers
            # have millisecond resolution and its loop time is cached per iteration).
            direction.timer = self.loop.call_later(max(wait, MIN_TIMER), self._flush, direction)

    def _flush(self, direction: _Direction) -> None:
        direction.timer = None
        if self.closed or self.stalled or direction.dst is None or direction.finished:
            return
        transport = direction.dst.transport
        if transport is None or direction.dst.gone:
            return
        now = self.clock()
        out: list[bytes] = []
        queue = direction.queue
        while queue and queue[0][0] <= now:
            _, kind, data = queue.popleft()
            if kind == _DATA:
                out.append(data)
                continue
            self._write(direction, transport, out)
            out = []
            if kind == _RESET:
                self.proxy.stats.resets += 1
                self._close(reset=True)
                return
            # end of stream
            direction.finished = True
            if transport.can_write_eof():
                transport.write_eof()
            else:
                transport.close()
            self._maybe_close()
            return
        self._write(direction, transport, out)
        if direction.queued < LOW_WATER and not self.resetting and direction.src is not None:
            direction.src.release(_QUEUE)
        self._arm(direction)

    def _write(self, direction: _Direction, transport: asyncio.Transport, out: list[bytes]) -> None:
        if not out:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        direction.queued -= len(data)
        transport.write(data)
        if direction is self.to_up:
            self.proxy.stats.bytes_to_target += len(data)
        else:
            self.proxy.stats.bytes_to_client += len(data)

    # -- faults changing --------------------------------------------------------------------

    def apply(self, faults: Faults) -> None:
        if self.closed:
            return
        if faults.reset_after is not None and self.total >= faults.reset_after and not self.resetting:
            self.proxy.stats.resets += 1
            self._close(reset=True)
            return
        if faults.stall and not self.stalled:
            self.stalled = True
            for side in (self.down, self.up):
                if side is not None:
                    side.hold(_STALL)
            self.to_up.cancel()
            self.to_down.cancel()
        elif not faults.stall and self.stalled:
            self.stalled = False
            for side in (self.down, self.up):
                if side is not None:
                    side.release(_STALL)
            self._arm(self.to_up)
            self._arm(self.to_down)

    # -- the end ----------------------------------------------------------------------------

    def _maybe_close(self) -> None:
        if self.to_up.finished and self.to_down.finished:
            self._close(reset=False)

    def _close(self, *, reset: bool) -> None:
        if self.closed:
            return
        self.closed = True
        self.to_up.cancel()
        self.to_down.cancel()
        for side in (self.down, self.up):
            if side is None or side.transport is None:
                continue
            if reset:
                send_reset(side.transport)
            else:
                side.transport.close()
        self.proxy._forget(self)

    def reset(self) -> None:
        """Reset both sides now (counted in ``resets``)."""
        if not self.closed:
            self.proxy.stats.resets += 1
            self._close(reset=True)

    def abort(self) -> None:
        self._close(reset=True)


class FaultProxy:
    """Relays TCP connections from ``listen`` to ``target``, injecting ``faults``.

    ``sock``: an already bound and listening socket to serve on instead of ``listen`` (e.g.
    ``Namespace.tcp_listen``); ``upstream_socket``: makes the unconnected socket each upstream
    connection uses (e.g. ``Namespace.open_socket``, to reach the target from a namespace);
    ``rng``: the source of jitter samples; ``clock``: seconds, monotonic (delivery times are
    checked against it, so nothing is delivered before its time by this clock).
    """

    def __init__(
        self,
        listen: tuple[str, int],
        target: tuple[str, int],
        faults: Faults | None = None,
        *,
        sock: socket.socket | None = None,
        upstream_socket: Callable[[], socket.socket] | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.listen = listen
        self.target = target
        self.faults = faults or Faults()
        self.stats = ProxyStats()
        self._sock = sock
        self._upstream_socket = upstream_socket
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not secrets)
        self._clock = clock
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_ref: asyncio.AbstractEventLoop | None = None

    @property
    def _loop(self) -> asyncio.AbstractEventLoop:
        if self._loop_ref is None:
            raise RuntimeError("FaultProxy not started")
        return self._loop_ref

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("FaultProxy already started")
        self._loop_ref = asyncio.get_running_loop()
        factory = lambda: _Side(self)  # noqa: E731
        if self._sock is not None:
            self._server = await self._loop.create_server(factory, sock=self._sock)
        else:
            host, port = self.listen
            self._server = await self._loop.create_server(factory, host, port, reuse_address=True)

    @property
    def port(self) -> int:
        """The port it listens on (the one the kernel chose for port 0)."""
        if self._server is None:
            raise RuntimeError("FaultProxy not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def open(self) -> int:
        return len(self._connections)

    @property
    def accepted(self) -> int:
        return self.stats.accepted

    @property
    def resets(self) -> int:
        return self.stats.resets

    def stats_json(self) -> dict[str, Any]:
        return {"open": self.open, **self.stats.__dict__}

    def set(self, faults: Faults) -> None:
        """Apply ``faults`` to new connections and to the open ones."""
        self.faults = faults
        for connection in list(self._connections):
            connection.apply(faults)

    def reset_existing(self) -> int:
        """Reset every open connection (both sides); how many there were."""
        connections = list(self._connections)
        for connection in connections:
            connection.reset()
        return len(connections)

    async def stop(self) -> None:
        """Stop listening and drop every connection (reset)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for connection in list(self._connections):
            connection.abort()
        if server is not None:
            await server.wait_closed()

    # -- connections ------------------------------------------------------------------------

    def _accepted(self, side: _Side) -> None:
        self.stats.accepted += 1
        if self.faults.refuse or self._server is None:
            self.stats.refused += 1
            send_reset(side.transport)
            return
        connection = _Connection(self, side)
        self._connections.add(connection)
        side.hold(_CONNECTING)
        if self.faults.stall:
            connection.apply(self.faults)
        task = self._loop.create_task(self._connect(connection))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, connection: _Connection) -> None:
        factory = lambda: _Side(self, connection)  # noqa: E731
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                if self._upstream_socket is None:
                    await self._loop.create_connection(factory, *self.target)
                else:
                    sock = self._upstream_socket()
                    try:
                        sock.setblocking(False)
                        await self._loop.sock_connect(sock, self.target)
                    except BaseException:
                        sock.close()
                        raise
                    await self._loop.create_connection(factory, sock=sock)
        except (OSError, TimeoutError):
            connection.upstream_failed()

    def _forget(self, connection: _Connection) -> None:
        self._connections.discard(connection)
