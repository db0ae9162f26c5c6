"""A listener whose TLS handshakes the event loop does at accept, with the peer's identity
verified before any protocol sees the connection.

``Listener(tls=...)`` terminates TLS with ``loop.start_tls`` on each accepted connection, with
the context of that moment. This class gives the server socket itself
``identity.front_server_context`` instead: its SNI callback switches each handshake to the current
certificate and can refuse the handshake at the ClientHello through ``TlsIdentity.admit`` (a
local proxy with nothing healthy behind it), before any certificate is sent. The client's SPIFFE
identity is verified in ``connection_made``.

Handshake failures happen inside the loop, which reports none of them. They are counted from the
outside: the loop makes our protocol at accept and calls its ``connection_made`` only once the
handshake is done; a protocol whose handshake failed is dropped (and garbage-collected) without
it. So failures = protocols made - handshakes completed - protocols still waiting, less the
handshakes ``admit`` refused (counted apart, ``refused{reason="not_admitted"}``). A protocol
still alive past the handshake timeout is not waiting any more (a failed handshake can keep it
alive in a reference cycle until the garbage collector runs).
"""

from __future__ import annotations

import asyncio
import functools
import time
import weakref
from collections.abc import Sequence

from meshgate.pki.verify import VerificationError
from meshgate.proxy.identity import TlsIdentity
from meshgate.proxy.listener import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    Listener,
    ProtocolFactory,
    listen,
)
from meshgate.proxy.relay import LostCallback, run_lost_callbacks
from meshgate.proxy.stats import ListenerStats


class _Verified(asyncio.Protocol):
    """The protocol of one accepted TLS connection: verifies the peer, then hands every event to
    the protocol the listener's factory makes for that peer."""

    def __init__(self, listener: TlsListener) -> None:
        self._listener = listener
        self.created_at = time.monotonic()
        self.lost_callbacks: list[LostCallback] = []
        self.inner: asyncio.Protocol | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        listener = self._listener
        listener.completed += 1
        listener._waiting.discard(self)
        connection = listener._register(transport)
        self.lost_callbacks.append(functools.partial(listener._forget, connection))
        try:
            peer = listener.identity.peer_identity(transport, usage="client")
        except VerificationError:
            listener.stats.peer_rejected += 1
            transport.abort()  # type: ignore[attr-defined]
            return
        inner = self.inner = listener._factory(peer)
        for name in ("data_received", "eof_received", "pause_writing", "resume_writing"):
            setattr(self, name, getattr(inner, name))
        inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:  # only before verification: dropped
        pass

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            if self.inner is not None:
                self.inner.connection_lost(exc)
        finally:
            run_lost_callbacks(self.lost_callbacks)


class TlsListener(Listener):
    """A ``Listener`` for mTLS connections, the handshake done by the loop (see the module doc)."""

    def __init__(
        self,
        name: str,
        protocol_factory: ProtocolFactory,
        identity: TlsIdentity,
        *,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        stats: ListenerStats | None = None,
    ) -> None:
        super().__init__(name, protocol_factory, handshake_timeout=handshake_timeout, stats=stats)
        self.identity = identity
        self.created = 0
        self.completed = 0
        self._waiting: weakref.WeakSet[_Verified] = weakref.WeakSet()
        self._refused_before = 0  # the identity's refusals before this listener started

    async def _listen(
        self, host: str | Sequence[str] | None, port: int, *, reuse_port: bool, backlog: int
    ) -> asyncio.Server:
        self._refused_before = self.identity.refused_handshakes
        return await listen(
            host, port, self._accept_verified, ssl=self.identity.front_server_context,
            reuse_port=reuse_port, backlog=backlog, ssl_handshake_timeout=self._handshake_timeout,
        )  # fmt: skip

    def _accept_verified(self) -> asyncio.Protocol:
        protocol = _Verified(self)
        self.created += 1
        self._waiting.add(protocol)
        return protocol

    def count_handshake_failures(self) -> int:
        """Update and return ``stats.tls_handshake_failures`` (see the module doc)."""
        refused = self.identity.refused_handshakes - self._refused_before
        since = time.monotonic() - self._handshake_timeout
        waiting = sum(1 for protocol in list(self._waiting) if protocol.created_at > since)
        failed = max(self.created - self.completed - waiting - refused, 0)
        self.stats.tls_handshake_failures = failed
        self.stats.refused["not_admitted"] = refused
        return failed
