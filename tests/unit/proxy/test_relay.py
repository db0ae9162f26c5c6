"""The relay over real loopback sockets, on asyncio's default loop and on uvloop: bytes both ways
(plain and TLS upstreams), bytes sent before the upstream is connected, half-close, backpressure,
idle timeout, bytes kept before the hand-over, connection accounting through the hand-over, the
upstream's identity, ``connect_cluster`` retries and ejection, and a TLS-terminating listener.

Each test runs its own event loop (``asyncio.Runner(loop_factory=...)``), parametrized over both
loops, instead of pytest-asyncio's loop: the relay must behave the same on both.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import pytest
import uvloop

from meshgate.pki.ca import CertificateAuthority, create_root_ca
from meshgate.pki.keys import private_key_to_pem
from meshgate.pki.spiffe import SpiffeId
from meshgate.pki.tls import server_context
from meshgate.pki.verify import VerifiedPeer
from meshgate.proxy.cluster import Cluster, EjectionPolicy, Endpoint
from meshgate.proxy.identity import TlsIdentity
from meshgate.proxy.listener import Listener
from meshgate.proxy.relay import DEFAULT_WRITE_BUFFER_LIMITS, CloseReason, Pending, Relay, hold
from meshgate.proxy.stats import ClusterStats, ListenerStats
from meshgate.proxy.upstream import (
    ConnectError,
    IdentityError,
    NoEndpointError,
    Upstream,
    UpstreamError,
    connect,
    connect_cluster,
)
from tests.unit.pki.pki_certs import leaf_for, zone_authority

T = TypeVar("T")
TD = "mesh.example"
LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}
Runner = Callable[..., T]


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Runner[Any]:
    factory = LOOPS[request.param]

    def runner(coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
        async def bounded() -> T:
            async with asyncio.timeout(timeout):
                return await coro

        with asyncio.Runner(loop_factory=factory) as r:
            return r.run(bounded())

    return runner


async def eventually(condition: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    """Wait until ``condition()`` holds, checking every few milliseconds, at most ``timeout`` s.

    Only for states nothing signals (a transport's reading state, what a ``Pending`` holds);
    anything with an event or a future is awaited instead.
    """
    try:
        async with asyncio.timeout(timeout):
            while not condition():  # noqa: ASYNC110 - no event to wait on: polled, with a deadline
                await asyncio.sleep(0.002)
    except TimeoutError:
        raise AssertionError(f"{what}: still false after {timeout:g} s") from None


async def lost(pending: Pending) -> None:
    """Wait until the connection ``pending`` holds is gone."""
    if pending.lost:
        return
    gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def mark() -> None:
        if not gone.done():
            gone.set_result(None)

    pending.lost_callbacks.append(mark)
    await gone


# --- certificates ---------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)  # TLS stacks read the wall clock: issue certificates for it


@pytest.fixture(scope="module")
def root() -> CertificateAuthority:
    return create_root_ca(TD, mesh="default", now=_now())


@pytest.fixture(scope="module")
def zone(root: CertificateAuthority) -> CertificateAuthority:
    return zone_authority(root, "eu", now=_now())


def identity(issuer: CertificateAuthority, spiffe_id: str) -> tuple[bytes, bytes]:
    leaf, key = leaf_for(issuer, spiffe_id, now=_now())
    return issuer.presented_chain_pem(leaf), private_key_to_pem(key)


BACKEND_ID = f"spiffe://{TD}/zone/eu/ingress/backend"
OTHER_BACKEND_ID = f"spiffe://{TD}/zone/eu/ingress/other"
PROXY_ID = f"spiffe://{TD}/svc/proxy"
CLIENT_ID = f"spiffe://{TD}/svc/client"


@pytest.fixture(scope="module")
def tls(root: CertificateAuthority, zone: CertificateAuthority) -> tuple[ssl.SSLContext, TlsIdentity]:
    """(the backend's mTLS server context, the proxy's identity)."""
    chain, key = identity(zone, BACKEND_ID)
    backend = server_context(chain, key, client_ca_pem=root.certificate_pem(), require_client_cert=True)
    proxy = TlsIdentity(*identity(zone, PROXY_ID), root.certificate_pem())
    return backend, proxy


# --- a proxy made of the engine's parts -----------------------------------------------------------


class _Bridge(asyncio.Protocol):
    """Holds the accepted connection (``hold``: what the client sends meanwhile is kept), connects
    upstream, then hands both to a Relay."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tcp = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        held = hold(tcp)
        self.proxy.held.append(held)
        task = asyncio.get_running_loop().create_task(self.proxy.bridge(tcp))
        self.proxy.tasks.add(task)
        task.add_done_callback(self.proxy.tasks.discard)
        held.lost_callbacks.append(task.cancel)  # the client went away while connecting


class Proxy:
    def __init__(
        self,
        connector: Callable[[], Awaitable[Upstream]],
        *,
        tls: TlsIdentity | None = None,
        **relay_options: Any,
    ) -> None:
        self.connector = connector
        self.relay_options = relay_options
        self.relays: list[Relay] = []
        self.held: list[Pending] = []
        self.peers: list[VerifiedPeer | None] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.stats = ListenerStats()
        self.cluster_stats = ClusterStats()
        self.listener = Listener("proxy", self._accept, tls=tls, stats=self.stats)
        self._first: asyncio.Future[Relay] = asyncio.get_running_loop().create_future()

    def _accept(self, peer: VerifiedPeer | None) -> asyncio.Protocol:
        self.peers.append(peer)
        return _Bridge(self)

    async def bridge(self, downstream: asyncio.Transport) -> None:
        try:
            upstream = await self.connector()
        except UpstreamError:
            downstream.abort()
            return
        relay = Relay(
            downstream,
            upstream.transport,
            listener_stats=self.stats,
            cluster_stats=self.cluster_stats,
            **self.relay_options,
        )
        self.relays.append(relay)
        if not self._first.done():
            self._first.set_result(relay)

    async def first_relay(self) -> Relay:
        return await asyncio.shield(self._first)

    async def __aenter__(self) -> Proxy:
        await self.listener.start("127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.listener.close()
        await self.listener.wait_drained(2.0)
        for task in list(self.tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for relay in self.relays:
            relay.abort()
            await relay.wait_closed()

    @property
    def port(self) -> int:
        return self.listener.port


@contextlib.asynccontextmanager
async def serving(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[object]],
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[int]:
    """A backend (asyncio streams: this is test scaffolding, not the data path). A connection is
    closed gracefully (pending bytes flushed) when the handler returns, aborted when it fails."""

    async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
            writer.transport.abort()
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()

    server = await asyncio.start_server(guarded, "127.0.0.1", 0, ssl=ssl_context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def send_all(writer: asyncio.StreamWriter, data: bytes, chunk: int = 65536) -> None:
    view = memoryview(data)
    for offset in range(0, len(data), chunk):
        writer.write(view[offset : offset + chunk])
        await writer.drain()


async def close_writer(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError):
        await writer.wait_closed()


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def held_transport(pending: Pending) -> asyncio.Transport:
    assert pending.transport is not None
    return pending.transport


def free_port() -> int:
    """A local port nothing listens on (connections to it are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- bytes both ways ------------------------------------------------------------------------------

SIZE = 4 * 1024 * 1024


@pytest.mark.parametrize("upstream_tls", [False, True], ids=["plain", "tls"])
def test_bytes_flow_both_ways_at_once_unchanged(
    run: Runner[None], tls: tuple[ssl.SSLContext, TlsIdentity], upstream_tls: bool
) -> None:
    backend_ctx, proxy_identity = tls
    to_backend, to_client = os.urandom(SIZE), os.urandom(SIZE)

    async def scenario() -> None:
        received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        async def backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sending = asyncio.create_task(send_all(writer, to_client))
            received.set_result(await reader.readexactly(SIZE))
            await sending  # then close: the client sees its EOF through the proxy

        async with serving(backend, backend_ctx if upstream_tls else None) as port:

            async def connector() -> Upstream:
                if upstream_tls:
                    return await connect(("127.0.0.1", port), ssl=proxy_identity, expect_identity=BACKEND_ID)
                return await connect(("127.0.0.1", port))

            async with Proxy(connector) as proxy:
                reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
                # the client sends at once, while the proxy is still connecting upstream
                sending = asyncio.create_task(send_all(writer, to_backend))
                got = await reader.readexactly(SIZE)
                await sending
                assert digest(got) == digest(to_client)
                assert digest(await received) == digest(to_backend)
                assert await reader.read() == b""
                await close_writer(writer)
                relay = proxy.relays[0]
                await relay.wait_closed()
                assert (relay.bytes_up, relay.bytes_down) == (SIZE, SIZE)
                assert (proxy.stats.bytes_in, proxy.stats.bytes_out) == (SIZE, SIZE)
                assert (proxy.cluster_stats.bytes_sent, proxy.cluster_stats.bytes_received) == (SIZE, SIZE)
                assert sum(proxy.stats.close_reasons.values()) == 1
                assert await proxy.listener.wait_drained(5) == 0
                assert proxy.listener.open_connections == 0

    run(scenario())


def test_bytes_and_eof_sent_before_the_upstream_is_connected_are_kept(run: Runner[None]) -> None:
    """A client that sends its whole request and its EOF before the proxy has an upstream gets its
    answer: the held connection kept them and the relay replays them (uvloop delivers an accepted
    connection's first bytes even when reading is paused in ``connection_made``)."""
    request = os.urandom(200_000)

    async def scenario() -> None:
        gate = asyncio.Event()

        async def backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            got = await reader.read()  # up to the client's EOF, relayed after the request
            writer.write(hashlib.sha256(got).digest())

        async with serving(backend) as port:

            async def connector() -> Upstream:
                await gate.wait()
                return await connect(("127.0.0.1", port))

            async with Proxy(connector) as proxy:
                reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
                writer.write(request)
                writer.write_eof()

                def settled() -> bool:
                    # asyncio's loop leaves the bytes in the socket (reading paused at accept);
                    # uvloop reads them at once, into the Pending
                    held = proxy.held[0] if proxy.held else None
                    return held is not None and (bool(held.buffer) or not held_transport(held).is_reading())

                await eventually(settled, what="the proxy holds the connection")
                gate.set()
                assert await reader.read() == hashlib.sha256(request).digest()
                assert await (await proxy.first_relay()).wait_closed() == CloseReason.DONE
                await close_writer(writer)

    run(scenario())


# --- half-close -----------------------------------------------------------------------------------


def test_half_close_plain_client_still_gets_the_full_reply(run: Runner[None]) -> None:
    request, reply = os.urandom(300_000), os.urandom(2 * 1024 * 1024)

    async def scenario() -> None:
        async def backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            got = await reader.read()  # the whole request, up to the client's EOF
            assert got == request
            await send_all(writer, reply)
            writer.write_eof()

        async with serving(backend) as port, Proxy(lambda: connect(("127.0.0.1", port))) as proxy:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            await send_all(writer, request)
            writer.write_eof()  # shut down our write side; keep reading
            assert digest(await reader.read()) == digest(reply)
            relay = await proxy.first_relay()
            assert await relay.wait_closed() == CloseReason.DONE
            await close_writer(writer)

    run(scenario())


def test_half_close_towards_tls_upstream_is_held_until_it_replies(
    run: Runner[None], tls: tuple[ssl.SSLContext, TlsIdentity]
) -> None:
    """The client's EOF cannot cross a TLS hop: the upstream keeps sending until it closes."""
    backend_ctx, proxy_identity = tls
    request, reply = b"request\n", os.urandom(1024 * 1024)

    async def scenario() -> None:
        async def backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            assert await reader.readexactly(len(request)) == request
            await send_all(writer, reply)  # then close: close_notify, then FIN

        async with (
            serving(backend, backend_ctx) as port,
            Proxy(
                lambda: connect(("127.0.0.1", port), ssl=proxy_identity, expect_identity=BACKEND_ID)
            ) as proxy,
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(request)
            writer.write_eof()
            assert digest(await reader.read()) == digest(reply)
            assert await (await proxy.first_relay()).wait_closed() == CloseReason.DONE
            await close_writer(writer)

    run(scenario())


def test_half_close_towards_silent_tls_upstream_closes_it_after_the_timeout(
    run: Runner[None], tls: tuple[ssl.SSLContext, TlsIdentity]
) -> None:
    backend_ctx, proxy_identity = tls

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        backend_saw_end: asyncio.Future[bytes] = loop.create_future()

        async def backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            backend_saw_end.set_result(await reader.read())  # never answers; waits for the end

        async with (
            serving(backend, backend_ctx) as port,
            Proxy(
                lambda: connect(("127.0.0.1", port), ssl=proxy_identity, expect_identity=BACKEND_ID),
                half_close_timeout=0.3,
            ) as proxy,
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(b"hello")
            writer.write_eof()
            start = loop.time()
            assert await reader.read() == b""
            assert loop.time() - start >= 0.25  # held back, not dropped at once
            assert await backend_saw_end == b"hello"  # closed gracefully: close_notify, no error
            assert await (await proxy.first_relay()).wait_closed() == CloseReason.HALF_CLOSE_TIMEOUT
            await close_writer(writer)

    run(scenario())


# --- backpressure ---------------------------------------------------------------------------------

#: what a write buffer may hold: the high-water mark plus reads already on their way (one read of
#: up to 256 KiB, and for TLS what the TLS layer had decrypted), with slack
BOUND = DEFAULT_WRITE_BUFFER_LIMITS[0] + 4 * 256 * 1024


class Pump:
    """Writes random bytes as fast as the connection takes them until ``stop()``; keeps their
    count and digest. ``blocked()``: its own write buffer is over its high-water mark, i.e. the
    bytes now wait in the sender."""

    def __init__(self, writer: asyncio.StreamWriter, sample: Callable[[], object]) -> None:
        self.writer = writer
        self.sample = sample
        self.sent = 0
        self.digest = hashlib.sha256()
        self._stopping = False

    def blocked(self) -> bool:
        transport = self.writer.transport
        return transport.get_write_buffer_size() > transport.get_write_buffer_limits()[1]

    def stop(self) -> int:
        """No more writes from now on; the final count."""
        self._stopping = True
        return self.sent

    async def run(self) -> None:
        while not self._stopping:
            data = os.urandom(64 * 1024)
            self.writer.write(data)
            self.digest.update(data)
            self.sent += len(data)
            self.sample()
            await self.writer.drain()


@pytest.mark.parametrize("upstream_tls", [False, True], ids=["plain", "tls"])
@pytest.mark.parametrize("slow", ["upstream", "downstream"])
def test_a_stalled_reader_keeps_the_write_buffer_bounded(
    run: Runner[None], tls: tuple[ssl.SSLContext, TlsIdentity], slow: str, upstream_tls: bool
) -> None:
    """With one end not reading, the proxy stops reading the other end: its buffer towards the
    stalled end stays bounded while the sender is pushed back (its own buffer fills up), and once
    the reader reads again every byte arrives unchanged."""
    backend_ctx, proxy_identity = tls

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        relayed: list[Relay] = []
        sizes: list[int] = []
        stalled = 1 if slow == "upstream" else 0  # write_buffer_sizes(): (downstream, upstream)

        def sample() -> None:
            if relayed:
                sizes.append(relayed[0].write_buffer_sizes()[stalled])

        pumps: asyncio.Queue[Pump] = asyncio.Queue()
        total: asyncio.Future[int] = loop.create_future()
        received: asyncio.Future[bytes] = loop.create_future()
        finished = asyncio.Event()

        async def backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if slow == "upstream":  # the backend reads nothing until told how much to read
                received.set_result(await reader.readexactly(await total))
            else:  # the backend sends as fast as it can, until the client has read everything
                pump = Pump(writer, sample)
                await pumps.put(pump)
                await pump.run()
                await finished.wait()

        async def connector() -> Upstream:
            if upstream_tls:
                return await connect(("127.0.0.1", port), ssl=proxy_identity, expect_identity=BACKEND_ID)
            return await connect(("127.0.0.1", port))

        async with serving(backend, backend_ctx if upstream_tls else None) as port, Proxy(connector) as proxy:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            pumping: asyncio.Task[None] | None = None
            if slow == "upstream":  # the client sends as fast as it can
                pump = Pump(writer, sample)
                pumping = asyncio.create_task(pump.run())
            else:
                pump = await pumps.get()
            relay = await proxy.first_relay()
            relayed.append(relay)
            fed = 1 - stalled

            def pushed_back() -> bool:
                sample()
                return not relay.reading()[fed] and pump.blocked()

            # the side feeding the stalled one stops being read, until the sender is held up too
            await eventually(pushed_back, timeout=15, what="the sender is pushed back")
            assert max(sizes) <= BOUND, max(sizes)
            assert relay.write_buffer_sizes()[stalled] <= BOUND
            assert not relay.reading()[fed]

            count = pump.stop()
            if slow == "upstream":
                total.set_result(count)  # the backend starts reading
                assert digest(await received) == pump.digest.hexdigest()
                assert pumping is not None
                await pumping
            else:
                assert digest(await reader.readexactly(count)) == pump.digest.hexdigest()
                finished.set()
            assert max(sizes) <= BOUND, max(sizes)
            await close_writer(writer)

    run(scenario())


def test_a_write_pause_taken_over_from_pending_follows_the_relays_limits(
    run: Runner[None], tls: tuple[ssl.SSLContext, TlsIdentity]
) -> None:
    """An upstream whose write buffer was over its high-water mark before the hand-over (a preface
    queued towards a TLS server that was not reading yet) and is under the relay's own limits: the
    TLS transport resumes writing while the relay applies them, and the client is read again."""
    backend_ctx, proxy_identity = tls
    preface = os.urandom(10 * 1024 * 1024)
    request = os.urandom(100_000)

    async def scenario() -> None:
        go = asyncio.Event()
        received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        async def backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await go.wait()
            received.set_result(await reader.readexactly(len(preface) + len(request)))

        async def connector() -> Upstream:
            upstream = await connect(("127.0.0.1", port), ssl=proxy_identity, expect_identity=BACKEND_ID)
            upstream.transport.write(preface[: 8 * 1024 * 1024])  # more than the sockets take
            upstream.transport.write(preface[8 * 1024 * 1024 :])  # stays in the TLS layer
            assert upstream.protocol.write_paused
            return upstream

        async with (
            serving(backend, backend_ctx) as port,
            Proxy(connector, write_buffer_limits=(16 * 1024 * 1024, 8 * 1024 * 1024)) as proxy,
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            await proxy.first_relay()
            writer.write(request)
            await writer.drain()
            go.set()
            assert digest(await received) == digest(preface + request)
            assert await reader.read() == b""  # the backend closed: so does the relay
            await close_writer(writer)

    run(scenario())


# --- idle timeout ---------------------------------------------------------------------------------


def test_idle_timeout_closes_both_sides(run: Runner[None]) -> None:
    async def scenario() -> None:
        backend_saw_end: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        async def backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(await reader.readexactly(4))
            backend_saw_end.set_result(await reader.read())

        async with (
            serving(backend) as port,
            Proxy(lambda: connect(("127.0.0.1", port)), idle_timeout=0.3) as proxy,
        ):
            loop = asyncio.get_running_loop()
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(b"ping")
            assert await reader.readexactly(4) == b"ping"
            last = loop.time()
            assert await reader.read() == b""
            assert loop.time() - last >= 0.25
            assert await backend_saw_end == b""
            assert await proxy.relays[0].wait_closed() == CloseReason.IDLE_TIMEOUT
            assert proxy.stats.close_reasons == {CloseReason.IDLE_TIMEOUT: 1}
            await close_writer(writer)

    run(scenario())


# --- what arrived before the hand-over ------------------------------------------------------------


def test_initial_bytes_and_an_upstream_that_speaks_first(run: Runner[None]) -> None:
    """An ingress-like protocol reads the first line itself, connects, waits until the upstream's
    banner has arrived (kept by Pending), then relays: nothing is lost or reordered."""

    async def scenario() -> None:
        async def backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"BANNER\n")
            line = await reader.readline()
            rest = await reader.readexactly(len(b"second"))
            writer.write(b"got " + line + rest)
            await reader.read()

        relays: list[Relay] = []
        routing: set[asyncio.Task[None]] = set()

        class Ingress(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = cast(asyncio.Transport, transport)
                self.buffer = b""

            def data_received(self, data: bytes) -> None:
                self.buffer += data
                if b"\n" in self.buffer:
                    self.transport.pause_reading()
                    task = asyncio.get_running_loop().create_task(self.route())
                    routing.add(task)
                    task.add_done_callback(routing.discard)

            async def route(self) -> None:
                upstream = await connect(("127.0.0.1", port))
                await eventually(lambda: bytes(upstream.protocol.buffer) == b"BANNER\n", what="banner kept")
                relays.append(Relay(self.transport, upstream.transport, initial=self.buffer))

        async with serving(backend) as port:
            listener = Listener("ingress", lambda peer: Ingress())
            await listener.start("127.0.0.1", 0)
            reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
            writer.write(b"first line\nsec")
            assert await reader.readline() == b"BANNER\n"
            writer.write(b"ond")
            assert await reader.readexactly(len(b"got first line\nsecond")) == b"got first line\nsecond"
            await close_writer(writer)
            await relays[0].wait_closed()
            listener.close()
            assert await listener.wait_drained(2) == 0

    run(scenario())


def test_relay_keeps_the_listener_and_cluster_counts_right(run: Runner[None]) -> None:
    """The listener's registry and the cluster's active count follow the connection through the
    hand-over to the relay, and both go back to zero when it ends."""

    async def scenario() -> None:
        async def backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(await reader.readexactly(2))
            await reader.read()

        async with serving(backend) as port:
            cluster = Cluster("backend", [Endpoint("127.0.0.1", port)])
            async with Proxy(lambda: connect_cluster(cluster)) as proxy:
                reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
                writer.write(b"hi")
                assert await reader.readexactly(2) == b"hi"
                assert proxy.listener.open_connections == 1
                assert proxy.stats.active == 1
                assert cluster.stats.active == 1
                assert cluster.active(cluster.endpoints[0]) == 1
                await close_writer(writer)
                await proxy.relays[0].wait_closed()
                assert await proxy.listener.wait_drained(5) == 0
                assert proxy.listener.open_connections == 0
                assert proxy.stats.active == 0
                assert cluster.stats.active == 0
                assert cluster.active(cluster.endpoints[0]) == 0
                assert proxy.stats.accepted == 1

    run(scenario())


def test_relay_refuses_one_transport_twice(run: Runner[None]) -> None:
    async def scenario() -> None:
        async with serving(lambda r, w: r.read()) as port:
            upstream = await connect(("127.0.0.1", port))
            with pytest.raises(ValueError, match="two different transports"):
                Relay(upstream.transport, upstream.transport)
            upstream.close()
            await lost(upstream.protocol)

    run(scenario())


# --- the upstream's identity ----------------------------------------------------------------------


def test_upstream_identity_is_checked_on_the_spiffe_id(
    run: Runner[None], tls: tuple[ssl.SSLContext, TlsIdentity]
) -> None:
    """connect() returns the verified server identity it was asked to expect."""
    backend_ctx, proxy_identity = tls

    async def scenario() -> None:
        async with serving(lambda r, w: r.read(), backend_ctx) as port:
            upstream = await connect(
                Endpoint("127.0.0.1", port, identity=SpiffeId.parse(BACKEND_ID)), ssl=proxy_identity
            )
            assert upstream.peer is not None
            assert str(upstream.peer.spiffe_id) == BACKEND_ID
            upstream.close()
            await lost(upstream.protocol)

    run(scenario())


@pytest.mark.parametrize("case", ["mismatch", "untrusted"])
def test_upstream_with_another_identity_is_refused(
    run: Runner[None], tls: tuple[ssl.SSLContext, TlsIdentity], root: CertificateAuthority, case: str
) -> None:
    """A server that is not the expected one (another mesh identity, or a certificate from roots we
    do not trust) is refused: ``IdentityError``, counted, and its connection closed."""
    backend_ctx, proxy_identity = tls
    if case == "untrusted":
        stranger = create_root_ca("other.example", mesh="default", now=_now())
        chain, key = identity(stranger, "spiffe://other.example/zone/eu/ingress/backend")
        backend_ctx = server_context(
            chain, key, client_ca_pem=root.certificate_pem(), require_client_cert=True
        )
    expected = OTHER_BACKEND_ID if case == "mismatch" else BACKEND_ID

    async def scenario() -> None:
        # The backend is a TLS listener: it counts the connection from the accept on, whether its
        # handshake then completes (a mismatch: the client refuses only afterwards, but uvloop's
        # abort can drop the client's last flight) or fails (untrusted).
        backend = Listener("backend", lambda peer: asyncio.Protocol(), tls=backend_ctx)
        await backend.start("127.0.0.1", 0)
        stats = ClusterStats()
        with pytest.raises(IdentityError) as refused:
            await connect(
                ("127.0.0.1", backend.port), ssl=proxy_identity, expect_identity=expected, stats=stats
            )
        assert refused.value.kind == case
        if case == "mismatch":
            assert refused.value.peer is not None
            assert str(refused.value.peer.spiffe_id) == BACKEND_ID
        assert (stats.connect_attempts, stats.connect_failures, stats.identity_failures) == (1, 1, 1)
        assert await backend.wait_drained(5) == 0  # the server sees the connection end
        assert backend.stats.accepted == 1
        backend.close()

    run(scenario())


# --- connect_cluster ------------------------------------------------------------------------------


def test_connect_cluster_retries_elsewhere_and_ejects_a_dead_endpoint(run: Runner[None]) -> None:
    """Every connection lands on the live endpoint even when the dead one is tried first; the dead
    one is ejected after three failed attempts in a row (then not tried any more), and comes back
    when its ejection time is over."""

    async def scenario() -> None:
        now = [1000.0]
        async with serving(lambda r, w: r.read()) as port:
            dead, live = Endpoint("127.0.0.1", free_port()), Endpoint("127.0.0.1", port)
            cluster = Cluster(
                "backend", [dead, live], clock=lambda: now[0], ejection=EjectionPolicy(base_ejection_time=30)
            )
            connected: list[Upstream] = []
            for _ in range(20):
                connected.append(await connect_cluster(cluster, attempts=2))
                if cluster.is_ejected(dead):
                    break
            assert cluster.is_ejected(dead)
            assert all(upstream.endpoint == live for upstream in connected)
            assert cluster.stats.connect_failures == 3  # one per attempt on the dead endpoint
            assert cluster.stats.connect_attempts == len(connected) + 3
            assert (cluster.stats.ejections, cluster.stats.ejected) == (1, 1)
            assert cluster.active(live) == len(connected)

            attempts = cluster.stats.connect_attempts
            connected.append(await connect_cluster(cluster, attempts=2))
            assert connected[-1].endpoint == live
            assert cluster.stats.connect_attempts == attempts + 1  # the ejected one is not tried

            now[0] += 30.0
            assert not cluster.is_ejected(dead)
            assert set(cluster.available()) == {dead, live}

            for upstream in connected:  # the active count is released when the connection ends
                upstream.close()
                await lost(upstream.protocol)
            assert cluster.active(live) == 0
            assert cluster.stats.active == 0

    run(scenario())


def test_connect_cluster_reports_the_last_failure(run: Runner[None]) -> None:
    async def scenario() -> None:
        endpoints = [Endpoint("127.0.0.1", free_port()) for _ in range(3)]
        cluster = Cluster("dead", endpoints)
        with pytest.raises(ConnectError) as failed:
            await connect_cluster(cluster, attempts=2)
        assert failed.value.kind == "refused"
        assert (cluster.stats.connect_attempts, cluster.stats.connect_failures) == (2, 2)
        assert cluster.stats.active == 0
        with pytest.raises(NoEndpointError):
            await connect_cluster(Cluster("empty"))

    run(scenario())


# --- a TLS-terminating listener in front of the relay ---------------------------------------------


def test_tls_listener_verifies_the_client_then_relays(
    run: Runner[None],
    tls: tuple[ssl.SSLContext, TlsIdentity],
    root: CertificateAuthority,
    zone: CertificateAuthority,
) -> None:
    """The listener terminates mTLS (the client's ClientHello is sent at once, before the listener
    has started TLS: uvloop delivers it early), hands the verified client identity to its protocol
    and relays to a plain backend; a client without a certificate fails its handshake, counted."""
    _, proxy_identity = tls
    client = TlsIdentity(*identity(zone, CLIENT_ID), root.certificate_pem())
    request = os.urandom(300_000)

    async def scenario() -> None:
        async def backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(hashlib.sha256(await reader.readexactly(len(request))).digest())
            await reader.read()

        async with (
            serving(backend) as port,
            Proxy(lambda: connect(("127.0.0.1", port)), tls=proxy_identity) as proxy,
        ):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", proxy.port, ssl=client.client_context, server_hostname="proxy"
            )
            writer.write(request)
            assert await reader.readexactly(32) == hashlib.sha256(request).digest()
            assert [str(peer.spiffe_id) if peer else None for peer in proxy.peers] == [CLIENT_ID]
            await close_writer(writer)

            anonymous = ssl.create_default_context(cadata=root.certificate_pem().decode())
            anonymous.check_hostname = False

            async def without_certificate() -> None:
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", proxy.port, ssl=anonymous, server_hostname="proxy"
                )
                try:  # TLS 1.3: the server's refusal of our (missing) certificate comes after
                    await reader.readexactly(1)
                finally:
                    await close_writer(writer)

            with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
                await without_certificate()
            assert await proxy.listener.wait_drained(5) == 0
            assert proxy.stats.tls_handshake_failures == 1
            assert proxy.stats.accepted == 2
            assert proxy.peers[1:] == []

    run(scenario())
