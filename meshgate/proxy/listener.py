"""Listening sockets, TLS termination with peer identity, and draining.

``listen(host, port, factory, ssl=..., reuse_port=...)`` is ``loop.create_server`` with the
engine's defaults; with ``reuse_port=True`` several worker processes bind the same port
(SO_REUSEPORT: the kernel spreads new connections over their sockets).

``Listener`` adds what a proxy role needs on top:

- a registry of its open connections, so that ``close()`` (stop accepting: the listening socket
  is closed, new connections are refused) followed by ``wait_drained(timeout)`` lets open
  connections finish and aborts those still open at the deadline;
- TLS termination done by the listener itself (``loop.start_tls`` on each accepted connection,
  with a handshake timeout), so handshake failures are counted and, with a ``TlsIdentity``, the
  client's certificate is verified (``TlsIdentity.peer_identity``: mesh roots, trust domain,
  exactly one SPIFFE URI SAN) *before* any protocol sees the connection. Each handshake uses the
  identity's server context of that moment, so a rotated certificate is served to new
  connections without a restart. uvloop reads an accepted connection even when its protocol
  paused reading in ``connection_made``: a ClientHello that arrives before ``start_tls`` runs is
  kept and fed to the TLS protocol ``start_tls`` installs (see ``_Handshaking``);
- the protocol factory receives the verified peer (``VerifiedPeer``, or None on plain listeners
  and listeners given a bare ``ssl.SSLContext``).

Connection tracking: each connection's protocol is wrapped in a thin object that stays the
transport's protocol but binds ``data_received``, ``eof_received``, ``pause_writing`` and
``resume_writing`` straight to the inner protocol's methods (no extra call on the data path), and
unregisters the connection on ``connection_lost``. A protocol that gives its transport to another
protocol must do it with ``relay.hand_over`` (``Relay`` does), which moves the unregistering
callback along (``lost_callbacks``). Only ``asyncio.Protocol`` (not ``BufferedProtocol``)
factories are supported.

With SO_REUSEPORT, connections the kernel has queued on a socket that is then closed are reset:
a worker that drains loses the handful of connections not yet accepted.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import ssl as ssl_module
from collections.abc import Callable, Sequence
from typing import Any, Final, cast

from meshgate.pki.verify import VerificationError, VerifiedPeer
from meshgate.proxy.identity import TlsIdentity
from meshgate.proxy.read_buffer import release_read_buffer
from meshgate.proxy.relay import LostCallback, Pending, hand_over, run_lost_callbacks
from meshgate.proxy.stats import ListenerStats

DEFAULT_BACKLOG: Final = 1024
DEFAULT_HANDSHAKE_TIMEOUT: Final = 10.0
#: after the drain deadline, how long aborted connections get to report they are gone
_ABORT_GRACE: Final = 1.0

ProtocolFactory = Callable[[VerifiedPeer | None], asyncio.Protocol]


async def listen(
    host: str | Sequence[str] | None,
    port: int,
    protocol_factory: Callable[[], asyncio.BaseProtocol],
    *,
    ssl: ssl_module.SSLContext | None = None,
    reuse_port: bool = False,
    backlog: int = DEFAULT_BACKLOG,
    ssl_handshake_timeout: float | None = None,
) -> asyncio.Server:
    """Start serving on ``host``:``port`` (port 0: any free port) and return the server."""
    loop = asyncio.get_running_loop()
    if reuse_port and not hasattr(socket, "SO_REUSEPORT"):
        raise OSError("SO_REUSEPORT is not supported on this platform")
    return await loop.create_server(
        protocol_factory,
        host,
        port,
        ssl=ssl,
        reuse_port=reuse_port,
        backlog=backlog,
        ssl_handshake_timeout=(ssl_handshake_timeout or DEFAULT_HANDSHAKE_TIMEOUT)
        if ssl is not None
        else None,
    )


class _Connection:
    __slots__ = ("task", "transport")

    def __init__(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.task: asyncio.Task[None] | None = None


class _Tracked(asyncio.Protocol):
    """The transport's protocol for one listener connection: the inner protocol's hot methods
    are bound onto it, and ``lost_callbacks`` unregisters the connection."""

    def __init__(self, inner: asyncio.Protocol, lost_callbacks: list[LostCallback]) -> None:
        if isinstance(inner, asyncio.BufferedProtocol) or not hasattr(inner, "data_received"):
            raise TypeError("listener protocols must be asyncio.Protocol (BufferedProtocol is not supported)")
        self.inner = inner
        self.lost_callbacks = lost_callbacks
        for name in ("data_received", "eof_received", "pause_writing", "resume_writing"):
            setattr(self, name, getattr(inner, name))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self.inner.connection_lost(exc)
        finally:
            run_lost_callbacks(self.lost_callbacks)


class _Handshaking(asyncio.Protocol):
    """A TLS listener's protocol from accept until ``start_tls`` takes the transport.

    It pauses reading at once, which asyncio's loop honours. uvloop (0.23) starts reading when
    ``connection_made`` returns whatever it was told, so the client's first bytes (its
    ClientHello) can arrive here before ``start_tls`` runs: they are kept in ``early`` (reading is
    paused then, which works now) and fed to the TLS protocol once ``start_tls`` has installed it.
    """

    def __init__(self, listener: Listener) -> None:
        self._listener = listener
        self._connection: _Connection | None = None
        self._transport: asyncio.Transport | None = None
        self.early = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tcp = self._transport = cast(asyncio.Transport, transport)
        tcp.pause_reading()  # start_tls resumes it
        self._connection = self._listener._handshake_started(tcp, self)

    def data_received(self, data: bytes) -> None:
        self.early += data
        if self._transport is not None:
            self._transport.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._connection is not None:
            if self._connection.task is not None:
                self._connection.task.cancel()
            self._listener._forget(self._connection)


class Listener:
    """A named listener with a connection registry, optional TLS termination and draining.

    ``tls``: a ``TlsIdentity`` (mTLS: its current server context for each handshake, client
    certificate required and verified) or a fixed ``ssl.SSLContext`` (no peer verification
    here), or None for plain TCP.
    """

    def __init__(
        self,
        name: str,
        protocol_factory: ProtocolFactory,
        *,
        tls: TlsIdentity | ssl_module.SSLContext | None = None,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        stats: ListenerStats | None = None,
    ) -> None:
        self.name = name
        self.stats = stats if stats is not None else ListenerStats()
        self._factory = protocol_factory
        self._tls = tls
        self._handshake_timeout = handshake_timeout
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._drained: list[asyncio.Future[None]] = []

    # -- serving -----------------------------------------------------------------------------------

    async def start(
        self,
        host: str | Sequence[str] | None,
        port: int,
        *,
        reuse_port: bool = False,
        backlog: int = DEFAULT_BACKLOG,
    ) -> asyncio.Server:
        if self._server is not None:
            raise RuntimeError(f"listener {self.name!r} is already started")
        self._server = await self._listen(host, port, reuse_port=reuse_port, backlog=backlog)
        return self._server

    async def _listen(
        self, host: str | Sequence[str] | None, port: int, *, reuse_port: bool, backlog: int
    ) -> asyncio.Server:
        """Bind and serve (subclasses choose the factory and TLS)."""
        factory = self._accept_plain if self._tls is None else self._accept_tls
        return await listen(host, port, factory, reuse_port=reuse_port, backlog=backlog)

    @property
    def server(self) -> asyncio.Server | None:
        return self._server

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(self._server.sockets) if self._server is not None else ()

    @property
    def port(self) -> int:
        """The port of the first listening socket (useful after listening on port 0)."""
        if not self.sockets:
            raise RuntimeError(f"listener {self.name!r} is not listening")
        return int(self.sockets[0].getsockname()[1])

    @property
    def open_connections(self) -> int:
        """Connections open now (TLS handshakes in progress included)."""
        return len(self._connections)

    def close(self) -> None:
        """Stop accepting: the listening sockets are closed (new connections are refused); open
        connections carry on."""
        if self._server is not None:
            self._server.close()

    async def wait_drained(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for the open connections to end, then abort those left;
        return how many were aborted."""
        if await self._wait_empty(timeout):
            return 0
        aborted = self.abort_all()
        await self._wait_empty(_ABORT_GRACE)
        if self._server is not None:
            try:
                async with asyncio.timeout(_ABORT_GRACE):
                    await self._server.wait_closed()
            except TimeoutError:
                pass
        return aborted

    def abort_all(self) -> int:
        """Abort every open connection now; how many there were."""
        connections = list(self._connections)
        for connection in connections:
            if connection.task is not None and not connection.task.done():
                connection.task.cancel()
            connection.transport.abort()  # type: ignore[attr-defined]
        return len(connections)

    async def _wait_empty(self, timeout: float) -> bool:
        if not self._connections:
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._drained.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except TimeoutError:
            return False
        finally:
            if waiter in self._drained:
                self._drained.remove(waiter)
        return True

    # -- registry ----------------------------------------------------------------------------------

    def _register(self, transport: asyncio.BaseTransport) -> _Connection:
        connection = _Connection(transport)
        self._connections.add(connection)
        self.stats.accepted += 1
        self.stats.active += 1
        return connection

    def _forget(self, connection: _Connection) -> None:
        if connection not in self._connections:
            return
        self._connections.discard(connection)
        self.stats.active -= 1
        if not self._connections:
            for waiter in self._drained:
                if not waiter.done():
                    waiter.set_result(None)

    # -- plain -----------------------------------------------------------------------------------

    def _accept_plain(self) -> asyncio.BaseProtocol:
        return _PlainAccepted(self, self._factory(None))

    # -- TLS ---------------------------------------------------------------------------------------

    def _accept_tls(self) -> asyncio.BaseProtocol:
        return _Handshaking(self)

    def _handshake_started(self, transport: asyncio.Transport, handshaking: _Handshaking) -> _Connection:
        connection = self._register(transport)
        connection.task = asyncio.get_running_loop().create_task(
            self._handshake(connection, transport, handshaking), name=f"tls-handshake-{self.name}"
        )
        return connection

    async def _handshake(
        self, connection: _Connection, raw: asyncio.Transport, handshaking: _Handshaking
    ) -> None:
        tls = self._tls
        assert tls is not None
        context = tls.server_context if isinstance(tls, TlsIdentity) else tls
        pending = Pending()
        pending.lost_callbacks.append(functools.partial(self._forget, connection))
        if raw.is_closing():
            self._forget(connection)
            return
        loop = asyncio.get_running_loop()
        starting = loop.create_task(
            loop.start_tls(
                raw, pending, context, server_side=True, ssl_handshake_timeout=self._handshake_timeout
            )
        )
        # Runs right after start_tls's first step, which installs the TLS protocol (reading paused)
        # and schedules its connection_made and the resume of reading.
        loop.call_soon(_replay_early, raw, handshaking, starting)
        try:
            transport = await starting
        except asyncio.CancelledError:
            raw.abort()
            self._forget(connection)
            return
        except Exception:  # ssl.SSLError, resets, the handshake timeout: all count as failures
            self.stats.tls_handshake_failures += 1
            raw.abort()
            self._forget(connection)
            return
        if transport is None:  # pragma: no cover - only for a loop without TLS support
            raw.abort()
            self._forget(connection)
            return
        connection.transport = transport
        connection.task = None  # the handshake is over: an idle connection keeps no Task
        release_read_buffer(raw.get_protocol())  # the loop's TLS protocol: see read_buffer
        peer: VerifiedPeer | None = None
        if isinstance(tls, TlsIdentity):
            try:
                peer = tls.peer_identity(transport, usage="client")
            except VerificationError:
                self.stats.peer_rejected += 1
                transport.abort()
                self._forget(connection)
                return
        self._install(transport, pending, peer)

    def _install(self, transport: asyncio.Transport, pending: Pending, peer: VerifiedPeer | None) -> None:
        try:
            inner = self._factory(peer)
            tracked = _Tracked(inner, [])
        except Exception:
            transport.abort()
            raise
        hand_over(transport, tracked)
        if pending.paused_reading and not pending.lost:
            transport.resume_reading()
        tracked.connection_made(transport)
        # What arrived during the handshake goes to the transport's protocol now: the inner
        # protocol may have handed the transport over already (e.g. to a relay's Pending).
        target = cast(asyncio.Protocol, transport.get_protocol())
        if pending.buffer:
            data, pending.buffer = bytes(pending.buffer), bytearray()
            target.data_received(data)
        if pending.write_paused:
            target.pause_writing()
        if pending.eof:
            target.eof_received()
        if pending.lost:
            target.connection_lost(pending.lost_exc)


def _replay_early(raw: asyncio.Transport, handshaking: _Handshaking, starting: asyncio.Future[Any]) -> None:
    """Feed the bytes ``handshaking`` read before ``start_tls`` to the TLS protocol it installed.

    Called once start_tls's first step has run: its protocol's ``connection_made`` and the
    transport's ``resume_reading`` are then scheduled, so the feed is scheduled after them, in the
    same loop iteration: the protocol gets the early bytes after ``connection_made`` and before
    anything read from the socket afterwards.
    """
    if not handshaking.early or starting.done():
        return
    protocol = raw.get_protocol()
    if protocol is handshaking:  # start_tls has not installed its protocol yet
        asyncio.get_running_loop().call_soon(_replay_early, raw, handshaking, starting)
        return

    def feed() -> None:
        data, handshaking.early = bytes(handshaking.early), bytearray()
        if starting.done() or raw.is_closing() or raw.get_protocol() is not protocol:
            return
        try:
            _feed(protocol, data)
        except Exception:  # the TLS protocol refused the bytes: the handshake fails
            raw.abort()

    asyncio.get_running_loop().call_soon(feed)


def _feed(protocol: asyncio.BaseProtocol, data: bytes) -> None:
    """Deliver ``data`` to ``protocol`` the way a transport does (buffered or not)."""
    get_buffer = getattr(protocol, "get_buffer", None)
    if get_buffer is None:
        cast(asyncio.Protocol, protocol).data_received(data)
        return
    view = memoryview(data)
    while view:
        buffer = memoryview(get_buffer(len(view))).cast("B")
        n = min(len(buffer), len(view))
        if n == 0:
            raise RuntimeError("the protocol gave an empty buffer")
        buffer[:n] = view[:n]
        cast(asyncio.BufferedProtocol, protocol).buffer_updated(n)
        view = view[n:]


class _PlainAccepted(_Tracked):
    """A plain listener's connection: registered when it is made."""

    def __init__(self, listener: Listener, inner: asyncio.Protocol) -> None:
        super().__init__(inner, [])
        self._listener = listener

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        connection = self._listener._register(transport)
        self.lost_callbacks.append(functools.partial(self._listener._forget, connection))
        super().connection_made(transport)
