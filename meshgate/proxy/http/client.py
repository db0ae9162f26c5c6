"""One upstream HTTP/1.1 connection: sends a request head and body, parses the response.

An ``HttpClient`` serves one exchange at a time (no pipelining upstream) and goes back to its
``HttpUpstreams`` pool when the response ended cleanly, the request was sent whole and both
sides allow keep-alive. The response parser's callbacks hand everything to the exchange's
server; bytes that arrive while the connection is idle in the pool close it (a server that talks
out of turn cannot be trusted with the next request).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, cast

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

from meshgate.proxy.cluster import Cluster, Endpoint
from meshgate.proxy.http.headers import RESPONSE_SPECIAL
from meshgate.proxy.relay import LostCallback, run_lost_callbacks

if TYPE_CHECKING:
    from meshgate.proxy.http.server import Exchange, HttpServer
    from meshgate.proxy.http.upstreams import HttpUpstreams


class HttpClient(asyncio.Protocol):
    __slots__ = (
        "_parts",
        "_reason",
        "_special",
        "cluster",
        "endpoint",
        "exchange",
        "idle_since",
        "label",
        "lost",
        "lost_callbacks",
        "out",
        "parser",
        "pool",
        "responses",
        "server",
        "transport",
        "upstreams",
        "write_paused",
    )  # fmt: skip

    def __init__(self, upstreams: HttpUpstreams, cluster: Cluster, endpoint: Endpoint) -> None:
        self.upstreams = upstreams
        self.cluster = cluster
        self.endpoint = endpoint
        self.label = str(endpoint)
        #: the pool this connection goes back to (set on its first release)
        self.pool: list[HttpClient] | None = None
        self.transport: asyncio.Transport = cast(asyncio.Transport, None)
        self.parser = HttpResponseParser(self)
        self.exchange: Exchange | None = None
        self.server: HttpServer | None = None
        self.out: list[bytes] = []
        self.lost = False
        self.write_paused = False
        self.idle_since = 0.0
        #: responses received whole on this connection (> 0: the connection is a reused one)
        self.responses = 0
        self.lost_callbacks: list[LostCallback] = []
        self._reason = b""
        # the response head's fields as they are parsed: to forward as they came (name, ": ",
        # value, CRLF after a slot for the status line), and the hop-by-hop and framing ones
        self._parts: list[bytes] = [b""]
        self._special: list[tuple[bytes, bytes]] = []

    # -- transport ---------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        server = self.server
        if server is None:  # idle in the pool: the server talks out of turn
            self.transport.abort()
            return
        exchange = self.exchange
        assert exchange is not None
        exchange.bytes_from_upstream += len(data)
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade as upgrade:
            if self.exchange is exchange:
                server.upstream_upgraded(exchange, data[upgrade.args[0] :])
        except HttpParserError as exc:
            if self.exchange is exchange:
                server.upstream_failed(exchange, "protocol", f"invalid response from upstream: {exc}")
        finally:
            if server.out:
                server.flush()

    def eof_received(self) -> bool:
        return False  # close: an HTTP/1.1 upstream that ends its side is done with the connection

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        try:
            if self.server is not None and self.exchange is not None:
                self.server.upstream_lost(self.exchange, self, exc)
        finally:
            run_lost_callbacks(self.lost_callbacks)

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.server is not None:
            self.server.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.server is not None:
            self.server.resume_reading()

    def flush(self) -> None:
        out = self.out
        if out:
            data = out[0] if len(out) == 1 else b"".join(out)
            out.clear()
            if not self.lost:
                self.transport.write(data)

    # -- exchanges ----------------------------------------------------------------------------------

    def bind(self, server: HttpServer, exchange: Exchange) -> None:
        self.server = server
        self.exchange = exchange
        self._reason = b""
        self._parts = [b""]
        self._special = []

    def unbind(self) -> None:
        self.server = None
        self.exchange = None

    # -- response parser callbacks ------------------------------------------------------------------

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        lower = name.lower()
        if lower in RESPONSE_SPECIAL:
            self._special.append((lower, value))
        else:
            self._parts += (name, b": ", value, b"\r\n")

    def on_headers_complete(self) -> None:
        server, exchange = self.server, self.exchange
        assert server is not None and exchange is not None
        parts, special, reason = self._parts, self._special, self._reason
        self._parts, self._special, self._reason = [b""], [], b""
        server.response_head(exchange, self.parser.get_status_code(), reason, parts, special)

    def on_body(self, body: bytes) -> None:
        if self.server is not None and self.exchange is not None:
            self.server.response_body(self.exchange, body)

    def on_message_complete(self) -> None:
        server, exchange = self.server, self.exchange
        if server is None or exchange is None:
            return
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            return  # an interim response, forwarded already: the final one follows
        self.responses += 1
        server.response_complete(exchange, self.parser.should_keep_alive())

    def __repr__(self) -> str:
        state = "lost" if self.lost else "busy" if self.exchange is not None else "idle"
        return f"<HttpClient {self.endpoint} {state} responses={self.responses}>"
