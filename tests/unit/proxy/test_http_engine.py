"""The HTTP engine in one process, over loopback sockets, on asyncio's loop and on uvloop: a raw
client in front, a scripted upstream behind (each test says byte for byte what the upstream
answers), so framing, keep-alive, pooling, retries and timeouts are checked exactly. The
hostile-input rules and the mesh path are tested with real processes in
tests/integration/test_http_engine.py."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
import uvloop

from meshgate.proxy.cluster import Cluster, Endpoint
from meshgate.proxy.http.access_log import AccessLog
from meshgate.proxy.http.metrics import render
from meshgate.proxy.http.options import HttpOptions
from meshgate.proxy.http.server import Site
from meshgate.proxy.http.upstreams import HttpUpstreams
from meshgate.proxy.listener import Listener
from meshgate.proxy.stats import Stats

T = TypeVar("T")
LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}
FAST = HttpOptions(tick=0.05, upstream_timeout=0.5, header_timeout=0.5, idle_timeout=5.0)


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Callable[..., Any]:
    factory = LOOPS[request.param]

    def runner(coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
        async def bounded() -> T:
            async with asyncio.timeout(timeout):
                return await coro

        with asyncio.Runner(loop_factory=factory) as r:
            return r.run(bounded())

    return runner


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Proxy:
    """A Site on a plain listener in front of one scripted upstream."""

    port: int
    site: Site
    upstreams: HttpUpstreams
    stats: Stats
    log: io.StringIO
    connections: list[int] = field(default_factory=list)  # upstream connections accepted
    cleanup: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def __aenter__(self) -> Proxy:
        return self

    clients: list[asyncio.StreamWriter] = field(default_factory=list)

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A client connection, closed when the proxy stops."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.clients.append(writer)
        return reader, writer

    async def __aexit__(self, *_: object) -> None:
        for writer in self.clients:
            writer.close()
        for step in self.cleanup:
            await step()


async def proxy(handler: Handler, options: HttpOptions = FAST, **site: Any) -> Proxy:
    """Start a proxy; use it as ``async with await proxy(...) as p:`` so everything stops."""
    accepted: list[int] = []
    tasks: set[asyncio.Task[None]] = set()

    async def counting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            tasks.discard(task)

    server = await asyncio.start_server(counting, "127.0.0.1", 0)
    upstream_port = server.sockets[0].getsockname()[1]
    stats = Stats()
    http = stats.http_stats("inbound", "web")
    cluster = Cluster("instances", stats=stats.cluster("instances"))
    cluster.update([Endpoint("127.0.0.1", upstream_port, zone="z1")])
    upstreams = HttpUpstreams("web", lambda: [cluster], options=options, stats=http)
    log = io.StringIO()
    the_site = Site(
        "inbound", lambda host: upstreams, options=options, stats=http, access_log=AccessLog(log),
        upstreams=lambda: [upstreams], **site,
    )  # fmt: skip
    listener = Listener("inbound", the_site.protocol)
    await listener.start("127.0.0.1", 0)

    async def stop() -> None:
        the_site.close()
        listener.close()
        listener.abort_all()
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0.01)  # let the aborted transports report they are gone

    return Proxy(listener.port, the_site, upstreams, stats, log, accepted, [stop])


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One response: its head and its body (Content-Length, chunked, or until the close)."""
    head = await read_head(reader)
    lower = head.lower()
    if b"transfer-encoding: chunked" in lower:
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                return head, body
            body += chunk[:-2]
    for line in lower.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return head, await reader.readexactly(int(line.split(b":")[1]))
    if head.startswith((b"HTTP/1.1 204", b"HTTP/1.1 304")):
        return head, b""
    return head, await reader.read()


async def ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Keep-alive upstream: answers each request with its request line."""
    while True:
        head = await read_head(reader)
        body = head.split(b"\r\n")[0]
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))


def get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: web\r\n{extra}\r\n".encode()


# -- framing ---------------------------------------------------------------------------------------


def test_a_chunked_response_is_rechunked_for_http11_and_sent_until_close_to_http10(run: Any) -> None:
    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_head(reader)
            writer.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
            )

    async def scenario() -> None:
        async with await proxy(chunked) as p:
            reader, writer = await p.open()
            writer.write(get("/a"))
            head, body = await read_response(reader)
            assert body == b"hello world"
            assert b"transfer-encoding: chunked" in head.lower()
            writer.write(b"GET /b HTTP/1.0\r\n\r\n")  # same connection, an HTTP/1.0 request
            head, body = await read_response(reader)
            assert b"transfer-encoding" not in head.lower()
            assert b"connection: close" in head.lower()
            assert body == b"hello world"
            writer.close()

    run(scenario())


def test_a_close_delimited_response_reaches_an_http11_client_chunked_on_a_kept_connection(run: Any) -> None:
    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nstreamed until close")
        await writer.drain()

    async def scenario() -> None:
        async with await proxy(until_close) as p:
            reader, writer = await p.open()
            for _ in range(2):  # the client's connection survives the upstream's close
                writer.write(get("/"))
                head, body = await read_response(reader)
                assert body == b"streamed until close"
                assert b"connection: close" not in head.lower()
            assert len(p.connections) == 2
            writer.close()

    run(scenario())


def test_a_head_response_ends_at_its_head_and_the_connection_goes_on(run: Any) -> None:
    async def head_then_get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            request = await read_head(reader)
            if request.startswith(b"HEAD"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    async def scenario() -> None:
        async with await proxy(head_then_get) as p:
            reader, writer = await p.open()
            writer.write(b"HEAD / HTTP/1.1\r\nHost: web\r\n\r\n")
            head = await read_head(reader)
            assert b"content-length: 1000" in head.lower()
            writer.write(get("/"))
            _, body = await read_response(reader)
            assert body == b"ok"
            writer.close()

    run(scenario())


def test_response_hop_by_hop_fields_and_those_connection_names_are_removed(run: Any) -> None:
    async def noisy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Secret\r\nKeep-Alive: timeout=5\r\n"
            b"X-Secret: 1\r\nX-Kept: 2\r\nContent-Length: 0\r\n\r\n"
        )
        await asyncio.sleep(1)

    async def scenario() -> None:
        async with await proxy(noisy) as p:
            reader, writer = await p.open()
            writer.write(get("/"))
            head = (await read_head(reader)).lower()
            assert b"x-kept: 2" in head
            assert b"x-secret" not in head
            assert b"keep-alive" not in head
            writer.close()

    run(scenario())


# -- keep-alive, pipelining, pooling ----------------------------------------------------------------


def test_pipelined_requests_are_answered_in_order_even_when_the_first_is_slowest(run: Any) -> None:
    async def slow_first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await read_head(reader)
            line = head.split(b"\r\n")[0]
            if b"/1 " in line:
                await asyncio.sleep(0.2)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(line), line))

    async def scenario() -> None:
        async with await proxy(slow_first) as p:
            reader, writer = await p.open()
            writer.write(b"".join(get(f"/{i}") for i in range(1, 6)))
            bodies = [(await read_response(reader))[1] for _ in range(5)]
            assert bodies == [f"GET /{i} HTTP/1.1".encode() for i in range(1, 6)]
            assert len(p.connections) == 1  # one pooled upstream connection served them all
            writer.close()

    run(scenario())


def test_a_stale_pooled_connection_is_retried_for_a_get_but_not_for_a_post(run: Any) -> None:
    async def answers_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await read_head(reader)  # the next request on this connection: closed unanswered, as a
        # server whose keep-alive timeout ran out just as the request came

    async def scenario() -> None:
        async with await proxy(answers_once) as p:
            http = p.stats.http_stats("inbound", "web")
            reader, writer = await p.open()
            writer.write(get("/first"))
            assert (await read_response(reader))[1] == b"ok"
            writer.write(get("/second"))  # on the pooled connection, which dies: sent again
            assert (await read_response(reader))[1] == b"ok"
            assert http.retries == 1
            assert len(p.connections) == 2
            writer.write(b"POST /third HTTP/1.1\r\nHost: web\r\nContent-Length: 2\r\n\r\nhi")
            head, _ = await read_response(reader)
            assert head.startswith(b"HTTP/1.1 502")  # not idempotent: never sent twice
            assert http.retries == 1
            assert http.upstream_errors == {"reset": 1}
            writer.close()

    run(scenario())


def test_draining_closes_idle_connections_and_answers_busy_and_new_ones_with_close(run: Any) -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_head(reader)
            await asyncio.sleep(0.2)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")

    async def scenario() -> None:
        async with await proxy(slow) as p:
            idle_r, idle_w = await p.open()
            idle_w.write(get("/"))
            await read_response(idle_r)
            busy_r, busy_w = await p.open()
            busy_w.write(get("/"))
            fresh_r, fresh_w = await p.open()  # accepted, its first request not sent yet
            await asyncio.sleep(0.05)
            p.site.drain()
            assert await idle_r.read() == b""  # closed at once
            fresh_w.write(get("/"))  # a request already on its way when the drain began
            for reader in (busy_r, fresh_r):
                head, body = await read_response(reader)
                assert body == b"ok"
                assert b"connection: close" in head.lower()
                assert await reader.read() == b""
            for writer in (idle_w, busy_w, fresh_w):
                writer.close()

    run(scenario())


# -- bodies and backpressure ------------------------------------------------------------------------


def test_a_large_chunked_upload_streams_with_bounded_buffers(run: Any) -> None:
    allowed = asyncio.Event()
    total = 24 * 1024 * 1024

    async def late_reader(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await read_head(reader)
        assert b"transfer-encoding: chunked" in head.lower()
        await allowed.wait()
        digest, size = hashlib.sha256(), 0
        while True:
            n = int((await reader.readuntil(b"\r\n")).strip(), 16)
            data = await reader.readexactly(n + 2)
            if n == 0:
                break
            digest.update(data[:-2])
            size += n
        body = f"{size} {digest.hexdigest()}".encode()
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))

    async def scenario() -> None:
        async with await proxy(late_reader, HttpOptions(tick=0.05)) as p:
            reader, writer = await p.open()
            writer.write(b"POST /upload HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n")
            expected = hashlib.sha256()
            block = bytes(range(256)) * 256  # 64 KiB
            sent = 0
            blocked = False
            while sent < total:
                writer.write(b"%x\r\n%s\r\n" % (len(block), block))
                expected.update(block)
                sent += len(block)
                try:
                    async with asyncio.timeout(0.5):
                        await writer.drain()
                except TimeoutError:
                    blocked = True  # the proxy stopped reading: backpressure reached the client
                    break
            assert blocked, "the client was never held back while the upstream read nothing"
            buffered = [
                c.transport.get_write_buffer_size() for pool in p.upstreams.pools.values() for c in pool
            ]
            bound = p.site.ticker.members  # every connection the site serves
            assert len(bound) == 1
            assert all(b < 2 * 1024 * 1024 for b in buffered)
            allowed.set()
            while sent < total:
                writer.write(b"%x\r\n%s\r\n" % (len(block), block))
                expected.update(block)
                sent += len(block)
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            _, body = await read_response(reader)
            assert body == f"{total} {expected.hexdigest()}".encode()
            writer.close()

    run(scenario(), timeout=60)


# -- upstream errors --------------------------------------------------------------------------------


def test_a_slow_upstream_gets_504_naming_the_request_id(run: Any) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        await asyncio.sleep(5)

    async def scenario() -> None:
        async with await proxy(silent) as p:
            reader, writer = await p.open()
            writer.write(get("/", "X-Request-Id: req-42\r\n"))
            head, body = await read_response(reader)
            assert head.startswith(b"HTTP/1.1 504")
            assert b"req-42" in body
            assert b"no response" in body
            assert p.stats.http_stats("inbound", "web").upstream_errors == {"timeout": 1}
            line = json.loads(p.log.getvalue().splitlines()[0])
            assert line["status"] == 504
            assert line["id"] == "req-42"

    run(scenario())


def test_an_upstream_that_breaks_http_gets_502_and_no_endpoint_gets_503(run: Any) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()

    async def scenario() -> None:
        async with await proxy(garbage) as p:
            reader, writer = await p.open()
            writer.write(get("/"))
            head, body = await read_response(reader)
            assert head.startswith(b"HTTP/1.1 502")
            assert b"invalid response" in body
            p.upstreams.clusters = list  # no cluster, no endpoint
            reader, writer = await p.open()
            writer.write(get("/"))
            head, body = await read_response(reader)
            assert head.startswith(b"HTTP/1.1 503")
            assert b"no healthy endpoint" in body

    run(scenario())


# -- telemetry --------------------------------------------------------------------------------------


def test_metrics_count_requests_by_method_class_and_zone_and_the_access_log_samples() -> None:
    stats = Stats()
    http = stats.http_stats("outbound", "pay")
    http.in_flight = 1
    http.finished("GET", 200, "z1", 0.003)
    http.finished("POST", 503, "z2", 0.2)
    http.upstream_error("connect")
    http.refusal(431)
    text = "\n".join(render(stats.http))
    assert (
        'meshgate_http_requests_total{direction="outbound",service="pay",method="GET",code="2xx",zone="z1"} 1'
        in text
    )
    assert 'code="5xx",zone="z2"} 1' in text
    assert (
        'meshgate_http_request_duration_seconds_bucket{direction="outbound",service="pay",le="0.005"} 1'
        in text
    )
    assert 'le="+Inf"} 2' in text
    assert 'kind="connect"} 1' in text
    assert 'status="431"} 1' in text
    sink = io.StringIO()
    quiet = AccessLog(sink, sample=0.0, errors=True)
    assert not quiet.wanted(200)
    assert quiet.wanted(502)
    assert quiet.wanted(0)
    assert AccessLog(sink, sample=1.0, errors=False).wanted(200)
    with pytest.raises(ValueError, match="between 0 and 1"):
        AccessLog(sink, sample=2.0)
