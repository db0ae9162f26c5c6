"""An accepted connection held while its upstream is found, then relayed (L4 proxying).

``Bridge`` is the protocol a listener gives each accepted connection when all it has to do is
connect somewhere and move bytes: it stops reading, awaits ``prepare(transport)`` (which returns
the downstream transport to relay, e.g. after terminating TLS on it, and a connected
``Upstream``), and hands both transports to a ``Relay``. When ``prepare`` raises
``UpstreamError`` the downstream is aborted (a TCP reset: the caller sees a failed connection
and can try elsewhere); when the downstream goes away first, ``prepare`` is cancelled.

``Sniffing`` first reads the start of the stream into a buffer and asks ``decide(buffer)``
for a decision once it has enough (e.g. the server name of a whole TLS ClientHello); the bytes it read are written upstream
before anything else, so nothing is lost or decrypted on the way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

from meshgate.proxy.relay import Pending, Relay, hand_over
from meshgate.proxy.stats import ClusterStats, ListenerStats, count_refusal
from meshgate.proxy.upstream import Upstream, UpstreamError

log = logging.getLogger(__name__)

#: how long a sniffing listener waits for the first bytes it needs
DEFAULT_SNIFF_TIMEOUT: Final = 10.0
#: what a sniffing listener reads at most before deciding
SNIFF_LIMIT: Final = 64 * 1024


class Refused(Exception):
    """A connection refused before any upstream was chosen; ``reason`` labels the metric."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


Prepared = tuple[asyncio.Transport, Upstream, ClusterStats | None]
Prepare = Callable[[asyncio.Transport, bytes], Awaitable[Prepared]]
#: ``prepare`` of a ``Sniffing`` bridge: also given what ``decide`` returned
SniffPrepare = Callable[[asyncio.Transport, bytes, str], Awaitable[Prepared]]


class Bridge(asyncio.Protocol):
    """Holds an accepted connection until ``prepare`` gives it an upstream, then relays it.

    Bytes, an EOF or write pauses that arrive meanwhile (uvloop delivers the first bytes of an
    accepted connection even when reading is paused at once) are kept in a ``Pending`` that the
    relay replays.
    """

    def __init__(self, prepare: Prepare, stats: ListenerStats, relay_options: dict[str, Any]) -> None:
        self._prepare = prepare
        self._stats = stats
        self._relay_options = relay_options
        self.transport: asyncio.Transport | None = None
        self.held = Pending()
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not asyncio.Transport
        self.held.connection_made(transport)
        self._start(b"")

    def _start(self, initial: bytes) -> None:
        assert self.transport is not None
        self.transport.pause_reading()
        self._task = asyncio.get_running_loop().create_task(self._bridge(self.transport, initial))

    def data_received(self, data: bytes) -> None:
        self.held.data_received(data)

    def eof_received(self) -> bool:
        return bool(self.held.eof_received())

    def pause_writing(self) -> None:
        self.held.pause_writing()

    def resume_writing(self) -> None:
        self.held.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def _bridge(self, downstream: asyncio.Transport, initial: bytes) -> None:
        try:
            relayed, upstream, cluster_stats = await self._prepare(downstream, initial)
        except Refused as refused:
            count_refusal(self._stats, refused.reason)
            log.debug("connection refused: %s", refused)
            downstream.abort()
            return
        except UpstreamError as exc:
            count_refusal(self._stats, f"upstream_{exc.kind}")
            log.debug("no upstream: %s", exc)
            downstream.abort()
            return
        if relayed is downstream:
            hand_over(downstream, self.held)  # the relay replays what was held
        Relay(
            relayed, upstream.transport, initial=initial, listener_stats=self._stats,
            cluster_stats=cluster_stats, **self._relay_options,
        )  # fmt: skip


class Sniffing(Bridge):
    """A ``Bridge`` that first reads until ``decide(buffer)`` returns a decision (a string, e.g.
    the server name; None: not enough yet; or raises ``Refused``), then has ``prepare`` find the
    upstream for that decision and relays, the bytes read so far sent upstream first."""

    def __init__(
        self,
        decide: Callable[[bytes], str | None],
        prepare: SniffPrepare,
        stats: ListenerStats,
        relay_options: dict[str, Any],
        timeout: float = DEFAULT_SNIFF_TIMEOUT,
    ) -> None:
        super().__init__(self._prepare_decided, stats, relay_options)
        self._decide = decide
        self._sniff_prepare = prepare
        self._decision = ""
        self._buffer = bytearray()
        self._timeout = timeout
        self._timer: asyncio.TimerHandle | None = None
        self._decided = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.held.connection_made(transport)
        self._timer = asyncio.get_running_loop().call_later(self._timeout, self._too_slow)

    def data_received(self, data: bytes) -> None:
        if self._decided:  # after the decision: for the relay
            self.held.data_received(data)
            return
        self._buffer += data
        try:
            decision = self._decide(bytes(self._buffer))
            if decision is None and len(self._buffer) >= SNIFF_LIMIT:
                raise Refused("too_long", f"nothing decided after {len(self._buffer)} bytes")
        except Refused as refused:
            self._refuse(refused)
            return
        if decision is not None:
            self._decided = True
            self._decision = decision
            self._cancel_timer()
            self._start(bytes(self._buffer))

    async def _prepare_decided(self, raw: asyncio.Transport, initial: bytes) -> Prepared:
        return await self._sniff_prepare(raw, initial, self._decision)

    def eof_received(self) -> bool:
        if self._decided:
            return super().eof_received()
        self._refuse(Refused("truncated", f"the stream ended after {len(self._buffer)} bytes"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        super().connection_lost(exc)

    def _too_slow(self) -> None:
        self._timer = None
        if not self._decided:
            self._refuse(Refused("timeout", f"nothing decided within {self._timeout:g} s"))

    def _refuse(self, refused: Refused) -> None:
        self._decided = True
        self._cancel_timer()
        count_refusal(self._stats, refused.reason)
        log.debug("connection refused: %s", refused)
        if self.transport is not None:
            self.transport.abort()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
