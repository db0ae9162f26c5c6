"""A bidirectional byte relay between two transports, built on ``asyncio.Protocol``.

``Relay(downstream, upstream, initial=b"...")`` takes over two connected transports (plain TCP or
TLS, asyncio's or uvloop's) by making one small protocol object the protocol of each, writes
``initial`` (bytes already read from downstream, e.g. a ClientHello) to upstream, and from then
on every ``data_received`` on one side is one ``write`` on the other ("one write per read", no
intermediate buffer, no streams).

Backpressure. When a side's transport write buffer passes its high-water mark, asyncio calls
``pause_writing`` on that side's protocol; the relay then pauses *reading* on the other side, and
resumes it on ``resume_writing``. A write buffer therefore holds at most the high-water mark plus
one read (asyncio and uvloop read at most 256 KiB at a time; a TLS transport also keeps a bounded
amount of undecrypted input), whatever the speed difference between the two ends. The relay sets
both transports' limits to ``write_buffer_limits`` (default 256 KiB high, 64 KiB low).

Half-close. When one side ends its direction (TCP FIN, ``eof_received``):

- towards a plain TCP peer (``can_write_eof()``): the EOF is propagated with ``write_eof()`` (after
  the buffered bytes) and the connection stays open for the other direction until it ends too;
  then both transports are closed.
- towards a TLS peer: asyncio's TLS transports cannot write an EOF (``write_eof`` is not
  implemented; a TLS close_notify closes both directions there). The EOF is held back: the TLS
  peer keeps sending for as long as it wants, and is closed gracefully (pending bytes flushed,
  then close_notify, then FIN) as soon as its own direction ends, or once the connection has
  moved no byte for ``half_close_timeout`` seconds (default 10 s), whichever comes first. A
  server that waits for the client's EOF before answering therefore only learns about it at that
  timeout; mesh protocols must not rely on half-close over TLS.
- from a TLS side: asyncio answers a close_notify (or a FIN) from a TLS peer by shutting that
  transport down completely, so nothing can be written to it any more. The other direction is
  over too: the other side is closed gracefully (its pending bytes flushed, then FIN or
  close_notify).

A side whose connection is lost (reset, or closed without EOF) makes the relay close the other
side gracefully, so the bytes already relayed towards it are delivered. Every graceful close is
bounded by ``linger_timeout`` (default 10 s): a transport not gone by then is aborted.

Idle timeout: when no byte has moved either way (and no write buffer has drained) for
``idle_timeout`` seconds (default 300 s; None disables it), both sides are closed.

Holding a connection while the upstream is found. Do not rely on ``pause_reading()`` called in
``connection_made``: asyncio's loop honours it, but uvloop (0.23) starts reading once
``connection_made`` returns whatever it was told, so the first bytes of an accepted connection
reach the protocol anyway, and are lost if that protocol ignores them. Give the transport to a
``Pending`` instead (``hold(transport)``): it keeps what arrives (bytes, up to ``read_limit``
before it stops reading; the EOF; the loss; the write-paused state) and the relay replays it.

Hand-off convention. Protocols that hand their transport to another protocol (a listener's
connection registry, ``Pending``, the relay) keep a ``lost_callbacks`` list of zero-argument
callables that must run exactly once when the connection is lost; ``hand_over`` moves them to the
new protocol. That is how a listener keeps counting a connection that a relay took over, and how a
cluster's active-request count is released when a relayed upstream connection ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Final, cast

from meshgate.proxy.stats import ClusterStats, ListenerStats, count_reason

DEFAULT_IDLE_TIMEOUT: Final = 300.0
DEFAULT_HALF_CLOSE_TIMEOUT: Final = 10.0
DEFAULT_LINGER_TIMEOUT: Final = 10.0
#: (high, low) write buffer marks set on both transports of a relay
DEFAULT_WRITE_BUFFER_LIMITS: Final = (256 * 1024, 64 * 1024)
#: what ``Pending`` keeps before it stops reading
PENDING_READ_LIMIT: Final = 64 * 1024

LostCallback = Callable[[], object]


class CloseReason:
    """Why a relay ended (the first cause wins)."""

    DONE: Final = "done"  # both directions ended with an EOF
    DOWNSTREAM_CLOSED: Final = "downstream_closed"  # downstream closed (or a TLS EOF) first
    UPSTREAM_CLOSED: Final = "upstream_closed"
    DOWNSTREAM_RESET: Final = "downstream_reset"  # downstream connection lost with an error
    UPSTREAM_RESET: Final = "upstream_reset"
    IDLE_TIMEOUT: Final = "idle_timeout"
    HALF_CLOSE_TIMEOUT: Final = "half_close_timeout"
    CLOSED: Final = "closed"  # Relay.close()
    ABORTED: Final = "aborted"  # Relay.abort()


def run_lost_callbacks(callbacks: list[LostCallback]) -> None:
    """Run and forget ``callbacks`` (each runs once even if this is called again)."""
    while callbacks:
        callbacks.pop(0)()


def hand_over(transport: asyncio.BaseTransport, protocol: asyncio.BaseProtocol) -> asyncio.BaseProtocol:
    """Make ``protocol`` the protocol of ``transport`` and return the previous one.

    The previous protocol's ``lost_callbacks`` (if it has that list) move to ``protocol``, which
    must have one too and run it when the connection is lost (``run_lost_callbacks``).
    """
    previous = transport.get_protocol()
    transport.set_protocol(protocol)
    moving = getattr(previous, "lost_callbacks", None)
    if isinstance(moving, list) and moving:
        target = getattr(protocol, "lost_callbacks", None)
        if not isinstance(target, list):
            raise TypeError(f"{type(protocol).__name__} has no lost_callbacks list to take over")
        target.extend(moving)
        moving.clear()
    return previous


def _is_tls(transport: asyncio.BaseTransport | None) -> bool:
    return transport is not None and transport.get_extra_info("ssl_object") is not None


def _drop(data: bytes) -> None:
    """Where bytes go once the side they were meant for is gone."""


class Pending(asyncio.Protocol):
    """Holds a connection until a relay (or another protocol) takes it over.

    Keeps the bytes received (and stops reading past ``read_limit``), the EOF, the loss and the
    write-paused state; ``Relay`` replays them when it takes the transport over.
    """

    def __init__(self, read_limit: int = PENDING_READ_LIMIT) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self.lost = False
        self.lost_exc: Exception | None = None
        self.write_paused = False
        self.paused_reading = False  # it stopped reading at read_limit
        self.lost_callbacks: list[LostCallback] = []
        self._read_limit = read_limit

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) >= self._read_limit and self.transport is not None:
            # Every time, not once: a pause_reading() that came before the transport started
            # reading (uvloop, in connection_made) did nothing. Pausing twice is a no-op.
            self.paused_reading = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.eof = True
        # Keep a plain TCP connection half-open for whoever takes it over (a TLS transport
        # closes itself whatever this returns).
        return not _is_tls(self.transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.lost_exc = exc
        run_lost_callbacks(self.lost_callbacks)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False


def hold(transport: asyncio.BaseTransport, *, read_limit: int = PENDING_READ_LIMIT) -> Pending:
    """Make a new ``Pending`` the protocol of ``transport`` (``hand_over``) and return it.

    For a protocol that must find its upstream before relaying: from now on what arrives on
    ``transport`` is kept for the ``Relay`` that takes it over. Reading is paused at once where the
    loop allows it; where it does not (uvloop, before ``connection_made`` has returned), the
    ``Pending`` keeps at most ``read_limit`` bytes (plus one read) before it pauses reading itself.
    """
    pending = Pending(read_limit)
    hand_over(transport, pending)
    pending.connection_made(transport)
    cast(asyncio.ReadTransport, transport).pause_reading()
    return pending


class _Side(asyncio.Protocol):
    """The relay's protocol on one transport."""

    __slots__ = (
        "closing",
        "eof",
        "forward",
        "half_close",
        "lost",
        "lost_callbacks",
        "name",
        "peer",
        "received",
        "relay",
        "time",
        "tls",
        "transport",
        "write_paused",
    )

    def __init__(self, relay: Relay, name: str) -> None:
        self.relay = relay
        self.name = name
        self.peer: _Side = self
        self.transport: asyncio.Transport = cast(asyncio.Transport, None)
        self.forward: Callable[[bytes], object] = _drop
        self.time = relay._loop.time
        self.received = 0
        self.eof = False  # this side's direction (its reads) has ended
        self.lost = False
        self.closing = False  # the relay closed this transport (gracefully)
        self.write_paused = False
        self.tls = False
        self.half_close = False  # an EOF can be written to this transport
        self.lost_callbacks: list[LostCallback] = []

    def eof_received(self) -> bool:
        return self.relay._on_eof(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay._on_lost(self, exc)

    def pause_writing(self) -> None:
        self.write_paused = True
        peer = self.peer
        if not (peer.eof or peer.lost or peer.closing):
            peer.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self.relay.last_activity = self.time()
        peer = self.peer
        if not (peer.eof or peer.lost or peer.closing):
            peer.transport.resume_reading()


class _Downstream(_Side):
    __slots__ = ("cluster_stats", "listener_stats")

    def __init__(self, relay: Relay, listener_stats: ListenerStats, cluster_stats: ClusterStats) -> None:
        super().__init__(relay, "downstream")
        self.listener_stats = listener_stats
        self.cluster_stats = cluster_stats

    def data_received(self, data: bytes) -> None:
        n = len(data)
        self.received += n
        self.listener_stats.bytes_in += n
        self.cluster_stats.bytes_sent += n
        self.relay.last_activity = self.time()
        self.forward(data)


class _Upstream(_Side):
    __slots__ = ("cluster_stats", "listener_stats")

    def __init__(self, relay: Relay, listener_stats: ListenerStats, cluster_stats: ClusterStats) -> None:
        super().__init__(relay, "upstream")
        self.listener_stats = listener_stats
        self.cluster_stats = cluster_stats

    def data_received(self, data: bytes) -> None:
        n = len(data)
        self.received += n
        self.listener_stats.bytes_out += n
        self.cluster_stats.bytes_received += n
        self.relay.last_activity = self.time()
        self.forward(data)


class Relay:
    """Relays bytes between ``downstream`` and ``upstream`` from construction on.

    Both transports must be connected; the relay becomes their protocol (``hand_over``). If their
    previous protocols were ``Pending``, what they kept is replayed (upstream bytes go to
    downstream, EOFs and losses are handled as if they had just happened). ``initial`` is written
    to upstream first and counted as downstream bytes. Reading is resumed on both sides (callers
    hold the downstream in a ``Pending`` while they connect upstream: ``hold``). Must be created
    on the running loop.
    """

    def __init__(
        self,
        downstream: asyncio.Transport,
        upstream: asyncio.Transport,
        *,
        initial: bytes = b"",
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        half_close_timeout: float = DEFAULT_HALF_CLOSE_TIMEOUT,
        linger_timeout: float = DEFAULT_LINGER_TIMEOUT,
        write_buffer_limits: tuple[int, int] | None = DEFAULT_WRITE_BUFFER_LIMITS,
        listener_stats: ListenerStats | None = None,
        cluster_stats: ClusterStats | None = None,
        on_close: Callable[[Relay], object] | None = None,
    ) -> None:
        if downstream is upstream:
            raise ValueError("a relay needs two different transports")
        self._loop = asyncio.get_running_loop()
        self.idle_timeout = idle_timeout
        self.half_close_timeout = half_close_timeout
        self.linger_timeout = linger_timeout
        self.reason: str | None = None
        self.last_activity = self._loop.time()
        self._listener_stats = listener_stats
        self._on_close = on_close
        self._eof_pending = False  # an EOF is held back from a TLS side (see the module doc)
        self._finished = False
        self._done: asyncio.Future[str] = self._loop.create_future()
        self._idle_handle: asyncio.TimerHandle | None = None
        self._linger_handle: asyncio.TimerHandle | None = None

        lstats = listener_stats if listener_stats is not None else ListenerStats()
        cstats = cluster_stats if cluster_stats is not None else ClusterStats()
        down = self._down = _Downstream(self, lstats, cstats)
        up = self._up = _Upstream(self, lstats, cstats)
        down.peer, up.peer = up, down
        previous = {down: self._take(down, downstream), up: self._take(up, upstream)}
        down.forward, up.forward = upstream.write, downstream.write
        for side in (down, up):
            # The write-paused state first, as the transport left it, then the relay's limits: a
            # transport may call pause_writing or resume_writing (TLS transports do) while they are
            # set, and that call must win. (The other way round, a resume_writing that came during
            # set_write_buffer_limits was overwritten by the stale state, and the other side was
            # never read again.)
            prev = previous[side]
            if isinstance(prev, Pending):
                side.write_paused = prev.write_paused
            else:
                _, high = side.transport.get_write_buffer_limits()
                side.write_paused = side.transport.get_write_buffer_size() > high
            if write_buffer_limits is not None:
                side.transport.set_write_buffer_limits(*write_buffer_limits)

        # A transport already gone (its owner saw connection_lost, or it is closing) receives
        # nothing more; it is counted as lost once the bytes it left behind are relayed.
        gone = {
            side: prev.lost if isinstance(prev, Pending) else side.transport.is_closing()
            for side, prev in previous.items()
        }
        for side in (down, up):
            if gone[side]:
                side.peer.forward = _drop
        if initial:
            down.data_received(initial)
        for side in (down, up):
            prev = previous[side]
            if isinstance(prev, Pending) and prev.buffer:
                data, prev.buffer = bytes(prev.buffer), bytearray()
                side.data_received(data)
        for side in (down, up):
            prev = previous[side]
            if gone[side]:
                if not isinstance(prev, Pending):
                    side.transport.abort()
                self._on_lost(side, prev.lost_exc if isinstance(prev, Pending) else None)
        for side in (down, up):
            prev = previous[side]
            if isinstance(prev, Pending) and prev.eof and not (side.eof or side.lost):
                side.eof_received()
        for side in (down, up):
            if side.eof or side.lost or side.closing:
                continue
            if side.peer.write_paused:
                side.transport.pause_reading()
            else:
                side.transport.resume_reading()
        if not self._finished:
            self._arm_idle()

    @staticmethod
    def _take(side: _Side, transport: asyncio.Transport) -> asyncio.BaseProtocol:
        previous = hand_over(transport, side)
        side.transport = transport
        side.tls = _is_tls(transport)
        side.half_close = transport.can_write_eof()
        return previous

    # -- public --------------------------------------------------------------------------------

    @property
    def bytes_up(self) -> int:
        """Bytes received from downstream (``initial`` included) and written upstream."""
        return self._down.received

    @property
    def bytes_down(self) -> int:
        """Bytes received from upstream and written downstream."""
        return self._up.received

    @property
    def closed(self) -> bool:
        """True once both transports are gone."""
        return self._finished

    @property
    def downstream(self) -> asyncio.Transport:
        return self._down.transport

    @property
    def upstream(self) -> asyncio.Transport:
        return self._up.transport

    def write_buffer_sizes(self) -> tuple[int, int]:
        """(downstream, upstream) transport write buffer sizes, for tests and debugging."""
        return (
            0 if self._down.lost else self._down.transport.get_write_buffer_size(),
            0 if self._up.lost else self._up.transport.get_write_buffer_size(),
        )

    def reading(self) -> tuple[bool, bool]:
        """Whether (downstream, upstream) are being read now."""
        return (
            not self._down.lost and self._down.transport.is_reading(),
            not self._up.lost and self._up.transport.is_reading(),
        )

    async def wait_closed(self) -> str:
        """Wait until both transports are gone; the close reason."""
        return await asyncio.shield(self._done)

    def close(self, reason: str = CloseReason.CLOSED) -> None:
        """Close both sides gracefully (pending bytes are flushed first)."""
        self._set_reason(reason)
        self._close_side(self._down)
        self._close_side(self._up)

    def abort(self, reason: str = CloseReason.ABORTED) -> None:
        """Close both sides now, dropping pending bytes."""
        self._set_reason(reason)
        for side in (self._down, self._up):
            if not side.lost:
                side.transport.abort()

    # -- events --------------------------------------------------------------------------------

    def _set_reason(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason

    def _on_eof(self, src: _Side) -> bool:
        dst = src.peer
        src.eof = True
        self.last_activity = self._loop.time()
        if src.tls:
            # The TLS transport shuts itself down after an EOF: nothing more can be written to
            # src, so the other direction is over as well.
            self._set_reason(CloseReason.DONE if dst.eof else f"{src.name}_closed")
            self._close_side(dst)
            return False
        if dst.lost or dst.closing:
            self._close_side(src)
            return True
        if dst.eof:
            self._set_reason(CloseReason.DONE)
            self._close_side(src)
            self._close_side(dst)
            return True
        if dst.half_close:
            src.forward = _drop
            dst.transport.write_eof()
            return True
        if src is self._up:
            # dst (downstream) is TLS and cannot carry a half-close. An upstream that ends its
            # direction has answered: everything it sent is flushed to the client, then both
            # sides are closed, so the client sees the end at once.
            self._set_reason(CloseReason.UPSTREAM_CLOSED)
            self._close_side(dst)
            self._close_side(src)
            return True
        # dst is a TLS upstream: hold the client's EOF back until the upstream's direction ends
        # or half_close_timeout.
        self._eof_pending = True
        self._arm_idle()
        return True

    def _on_lost(self, side: _Side, exc: Exception | None) -> None:
        if side.lost:
            return
        side.lost = True
        side.peer.forward = _drop
        self._set_reason(f"{side.name}_reset" if exc is not None else f"{side.name}_closed")
        run_lost_callbacks(side.lost_callbacks)
        if side.peer.lost:
            self._finish()
        else:
            self._close_side(side.peer)

    def _close_side(self, side: _Side) -> None:
        if side.lost or side.closing:
            return
        side.closing = True
        side.transport.close()
        if self._linger_handle is None and not self._finished:
            self._linger_handle = self._loop.call_later(self.linger_timeout, self._on_linger)

    def _on_linger(self) -> None:
        self._linger_handle = None
        for side in (self._down, self._up):
            if not side.lost:
                side.transport.abort()

    def _timeout(self) -> float | None:
        timeout = self.idle_timeout
        if self._eof_pending and (timeout is None or self.half_close_timeout < timeout):
            return self.half_close_timeout
        return timeout

    def _arm_idle(self) -> None:
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None
        timeout = self._timeout()
        if timeout is not None and not self._finished:
            self._idle_handle = self._loop.call_at(self.last_activity + timeout, self._check_idle)

    def _check_idle(self) -> None:
        self._idle_handle = None
        timeout = self._timeout()
        if self._finished or timeout is None:
            return
        if self._loop.time() - self.last_activity >= timeout - 0.001:
            half = self._eof_pending and timeout == self.half_close_timeout
            self.close(CloseReason.HALF_CLOSE_TIMEOUT if half else CloseReason.IDLE_TIMEOUT)
        else:
            self._idle_handle = self._loop.call_at(self.last_activity + timeout, self._check_idle)

    def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        for handle in (self._idle_handle, self._linger_handle):
            if handle is not None:
                handle.cancel()
        self._idle_handle = self._linger_handle = None
        reason = self.reason or CloseReason.CLOSED
        if self._listener_stats is not None:
            count_reason(self._listener_stats, reason)
        if not self._done.done():
            self._done.set_result(reason)
        if self._on_close is not None:
            self._on_close(self)

    def __repr__(self) -> str:
        state = f"closed ({self.reason})" if self._finished else "open"
        return f"<Relay {state} up={self.bytes_up} down={self.bytes_down}>"


def relay_of(transport: asyncio.BaseTransport) -> Relay | None:
    """The relay that owns ``transport``, if any."""
    protocol: Any = transport.get_protocol()
    return protocol.relay if isinstance(protocol, _Side) else None
