"""The HTTP engine's retry on status (edges): an idempotent request answered 502/503 by one
upstream group goes once to the next group, within the retry budget. In one process over
loopback, on asyncio's loop and on uvloop, with scripted upstreams."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from meshgate.proxy.cluster import Cluster, Endpoint
from meshgate.proxy.http.metrics import HttpStats
from meshgate.proxy.http.retry_budget import RetryBudget
from meshgate.proxy.http.server import Site
from meshgate.proxy.http.upstreams import HttpUpstreams
from meshgate.proxy.listener import Listener
from tests.unit.proxy.test_http_engine import FAST, LOOPS, read_head, read_response

T = TypeVar("T")
RETRY_STATUSES = frozenset({502, 503})


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, T]], T]:
    factory = LOOPS[request.param]

    def runner(coro: Coroutine[Any, Any, T]) -> T:
        async def bounded() -> T:
            async with asyncio.timeout(20):
                return await coro

        with asyncio.Runner(loop_factory=factory) as r:
            return r.run(bounded())

    return runner


class Recording(Cluster):
    """A cluster that remembers every outcome reported for its endpoints."""

    def __init__(self, name: str, endpoint: Endpoint) -> None:
        super().__init__(name, [endpoint])
        self.reports: list[tuple[Endpoint, bool]] = []

    def report(self, endpoint: Endpoint, ok: bool) -> None:
        super().report(endpoint, ok)
        self.reports.append((endpoint, ok))


@dataclass
class Upstream:
    """A scripted HTTP/1.1 server answering every request with one status, naming itself."""

    name: str
    status: int
    requests: list[bytes] = field(default_factory=list)
    server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await read_head(reader)
                for line in head.lower().split(b"\r\n"):
                    if line.startswith(b"content-length:"):
                        await reader.readexactly(int(line.split(b":")[1]))
                self.requests.append(head.split(b"\r\n")[0])
                body = self.name.encode()
                writer.write(
                    b"HTTP/1.1 %d X\r\ncontent-length: %d\r\n\r\n%s" % (self.status, len(body), body)
                )
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port


@dataclass
class Edge:
    port: int
    site: Site
    stats: HttpStats
    groups: list[Recording]
    upstreams: list[Upstream]

    async def request(self, raw: bytes) -> tuple[bytes, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(raw)
            return await read_response(reader)
        finally:
            writer.close()


@asynccontextmanager
async def edge(
    statuses: tuple[int, ...], budget: RetryBudget | None, zone_header: bool = False
) -> AsyncIterator[Edge]:
    """A site in front of one upstream group (one endpoint each) per status, in that order."""
    upstreams = [Upstream(f"zone-{i + 1}", status) for i, status in enumerate(statuses)]
    groups = [
        Recording(f"web/zone-{i + 1}", Endpoint("127.0.0.1", await u.start(), zone=f"zone-{i + 1}"))
        for i, u in enumerate(upstreams)
    ]
    stats = HttpStats()
    http = HttpUpstreams("web", lambda: groups, options=FAST, stats=stats)
    site = Site(
        "edge", lambda host: http, options=FAST, stats=HttpStats(), upstreams=lambda: [http],
        retry_statuses=RETRY_STATUSES, retry_budget=budget, zone_header=zone_header,
    )  # fmt: skip
    listener = Listener("edge", site.protocol)
    await listener.start("127.0.0.1", 0)
    try:
        yield Edge(listener.port, site, stats, groups, upstreams)
    finally:
        site.close()
        listener.close()
        listener.abort_all()
        for u in upstreams:
            assert u.server is not None
            u.server.close()


GET = b"GET /items HTTP/1.1\r\nHost: web\r\n\r\n"


def test_an_idempotent_request_answered_503_is_answered_by_the_next_group(run: Any) -> None:
    async def scenario() -> None:
        async with edge((503, 200), RetryBudget(clock=lambda: 0.0)) as e:
            head, body = await e.request(GET)
            assert head.startswith(b"HTTP/1.1 200")
            assert body == b"zone-2"
            assert e.upstreams[0].requests == [b"GET /items HTTP/1.1"]  # tried first, answer dropped
            assert e.upstreams[1].requests == [b"GET /items HTTP/1.1"]
            first = e.groups[0].endpoints[0]
            assert (first, False) in e.groups[0].reports  # the 503 counts against the first group
            assert e.stats.retries == 1
            assert e.stats.requests == {("GET", "2xx", "zone-2"): 1}  # one request, counted once
            assert e.stats.in_flight == 0

    run(scenario())


def test_a_502_is_retried_too_and_a_404_is_not(run: Any) -> None:
    async def scenario() -> None:
        async with edge((502, 200), RetryBudget(clock=lambda: 0.0)) as e:
            assert (await e.request(GET))[1] == b"zone-2"
            assert e.stats.retries == 1
        async with edge((404, 200), RetryBudget(clock=lambda: 0.0)) as e:
            head, body = await e.request(GET)
            assert head.startswith(b"HTTP/1.1 404")
            assert body == b"zone-1"
            assert e.upstreams[1].requests == []
            assert e.stats.retries == 0

    run(scenario())


def test_a_post_with_a_body_is_not_retried(run: Any) -> None:
    async def scenario() -> None:
        async with edge((503, 200), RetryBudget(clock=lambda: 0.0)) as e:
            head, body = await e.request(
                b"POST /orders HTTP/1.1\r\nHost: web\r\nContent-Length: 5\r\n\r\nhello"
            )
            assert head.startswith(b"HTTP/1.1 503")
            assert body == b"zone-1"
            assert e.upstreams[1].requests == []  # never sent twice
            assert e.stats.retries == 0

    run(scenario())


def test_an_exhausted_budget_lets_the_503_through(run: Any) -> None:
    async def scenario() -> None:
        budget = RetryBudget(ratio=0.0, minimum=0, clock=lambda: 0.0)
        async with edge((503, 200), budget) as e:
            head, body = await e.request(GET)
            assert head.startswith(b"HTTP/1.1 503")
            assert body == b"zone-1"
            assert e.upstreams[1].requests == []
            assert e.stats.retries == 0
            assert budget.exhausted == 1

    run(scenario())


def test_the_retry_goes_once_and_never_back_to_the_same_group(run: Any) -> None:
    async def scenario() -> None:
        async with edge((503, 503, 200), RetryBudget(clock=lambda: 0.0)) as e:
            head, body = await e.request(GET)
            assert head.startswith(b"HTTP/1.1 503")
            assert body == b"zone-2"  # the second group's answer: one retry only
            assert [len(u.requests) for u in e.upstreams] == [1, 1, 0]
            assert e.stats.retries == 1
        async with edge((503,), RetryBudget(clock=lambda: 0.0)) as e:
            head, body = await e.request(GET)  # no other group: the answer stands
            assert (head[:12], body) == (b"HTTP/1.1 503", b"zone-1")
            assert len(e.upstreams[0].requests) == 1
            assert e.stats.retries == 0

    run(scenario())


def test_the_zone_header_names_the_zone_that_answered(run: Any) -> None:
    async def scenario() -> None:
        async with edge((503, 200), RetryBudget(clock=lambda: 0.0), zone_header=True) as e:
            head, _ = await e.request(GET)
            assert b"\r\nx-meshgate-zone: zone-2\r\n" in head
            assert head.lower().count(b"x-meshgate-zone") == 1
            head, _ = await e.request(b"DELETE /x HTTP/1.1\r\nHost: web\r\nContent-Length: 1\r\n\r\nx")
            assert head.startswith(b"HTTP/1.1 503")
            assert b"\r\nx-meshgate-zone: zone-1\r\n" in head  # the answer that went through
        async with edge((200,), RetryBudget(clock=lambda: 0.0)) as e:
            head, _ = await e.request(GET)
            assert b"x-meshgate-zone" not in head.lower()  # only when asked

    run(scenario())


def test_on_a_kept_connection_each_request_counts_for_the_budget_and_a_retry_does_not(run: Any) -> None:
    async def scenario() -> None:
        budget = RetryBudget(ratio=0.5, minimum=0, clock=lambda: 0.0)
        async with edge((503, 200), budget) as e:
            reader, writer = await asyncio.open_connection("127.0.0.1", e.port)
            bodies = []
            for _ in range(3):
                writer.write(GET)
                head, body = await read_response(reader)
                assert b"connection: close" not in head.lower()
                bodies.append(body)
            writer.close()
            # 1 request: half a retry allowed, none spent; 2: one allowed, one spent; 3: 1.5, one spent
            assert bodies == [b"zone-2", b"zone-1", b"zone-2"]
            assert e.stats.retries == 2
            assert budget.exhausted == 1
            assert e.stats.requests == {("GET", "2xx", "zone-2"): 2, ("GET", "5xx", "zone-1"): 1}

    run(scenario())
