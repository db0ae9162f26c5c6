"""The downstream side of the HTTP engine: one ``HttpServer`` protocol per accepted connection.

Each request is parsed by httptools (llhttp, strict: it refuses conflicting or invalid
Content-Length, Transfer-Encoding not ending in chunked, Content-Length with Transfer-Encoding,
obs-fold, bare CR or LF, NUL and other control characters, whitespace before a colon and invalid
chunk sizes). The server adds what llhttp leaves to it: versions (505), Host (exactly one on
HTTP/1.1, valid syntax), the request line and header block limits (414, 431), CONNECT (405) and
the timeouts (408). A refused request gets a short response and the connection is closed after it
(lingering: our side is shut, what the client still sends is read and dropped for a moment, so
the response is not lost to a reset); nothing of it reaches an upstream.

A valid request becomes an ``Exchange``. Its head is rewritten for the upstream (hop-by-hop fields
and every field ``Connection`` names removed, ``X-Forwarded-For``, ``X-Forwarded-Proto``,
``Forwarded`` and the request id added, the caller's verified SPIFFE ID set in
``X-Meshgate-Client-Identity`` and any such header from the client dropped), then sent on an idle
pooled connection to the endpoint the balancer chose, or on a new one. Bodies stream both ways as
they arrive, chunked ones re-framed; when the receiving side's write buffer fills, the sending
side stops being read (backpressure), so memory per connection is bounded whatever the body size.

Pipelined requests are parsed as they come and answered in order: while one is being answered,
the next waits (with whatever body arrived in the same read) and reading stops. ``Expect:
100-continue`` is forwarded and the upstream's ``100 Continue`` relayed. An ``Upgrade`` request
(WebSocket) is forwarded with its ``Upgrade``/``Connection`` fields; on ``101`` both connections
are handed to a byte ``Relay``.

Upstream failures become responses naming the cause and the request id: 503 when no endpoint is
available, 502 when connecting fails (after ``connect_attempts`` endpoints) or the upstream breaks
the protocol or resets before answering, 504 when its response head does not come within
``upstream_timeout``. A request that failed on a reused pooled connection before any answer
(the server closed it meanwhile) is sent once more on a new connection when it is idempotent and
has no body. A site with ``retry_statuses`` (an edge) also sends an idempotent request without a
body answered with one of them once more, to an endpoint of another upstream group (another
zone), while its ``RetryBudget`` allows; the first answer is dropped unread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Final, cast

from httptools import (
    HttpParserCallbackError,
    HttpParserError,
    HttpParserInvalidMethodError,
    HttpParserInvalidURLError,
    HttpParserUpgrade,
    HttpRequestParser,
    parse_url,
)

from meshgate.pki.verify import VerifiedPeer
from meshgate.proxy.cluster import Cluster, Endpoint
from meshgate.proxy.http import headers as h
from meshgate.proxy.http.access_log import AccessLog
from meshgate.proxy.http.client import HttpClient
from meshgate.proxy.http.metrics import HttpStats
from meshgate.proxy.http.options import HttpOptions
from meshgate.proxy.http.retry_budget import RetryBudget
from meshgate.proxy.http.status import REASONS, HttpError, error_response
from meshgate.proxy.http.ticker import Ticker
from meshgate.proxy.http.upstreams import HttpUpstreams
from meshgate.proxy.relay import Relay
from meshgate.proxy.stats import ListenerStats
from meshgate.proxy.upstream import UpstreamError

log = logging.getLogger(__name__)

# connection states (what the deadline means)
_FIRST: Final = 0  # accepted, nothing received yet: close quietly at the header timeout
_HEAD: Final = 1  # a request head is arriving: 408
_BODY: Final = 2  # the current request's body is arriving: 408 (or cut when answered already)
_UPSTREAM: Final = 3  # waiting for the response head: 504
_RESPONSE: Final = 4  # a response is streaming: cut when no byte moved for stall_timeout
_IDLE: Final = 5  # keep-alive, no request: close quietly
_CONNECTING: Final = 6  # the connect task owns its own timeout
_LINGER: Final = 7  # closing after a refusal: close at the deadline
_CLOSED: Final = 8

_LINGER_TIME: Final = 2.0
_INF: Final = float("inf")
#: the engine's clock (uvloop's loop.time() moves in whole milliseconds: too coarse for latencies)
_now: Final = time.monotonic

#: headers the request rewrite looks at; any other is forwarded as it came
_SPECIAL: Final = h.HOP_BY_HOP | {
    b"host", b"content-length", h.CLIENT_IDENTITY, h.REQUEST_ID, h.FORWARDED, h.X_FORWARDED_FOR,
    h.X_FORWARDED_PROTO,
}  # fmt: skip
#: ``Connection`` values that name no other field
_PLAIN_CONNECTION: Final = frozenset({b"keep-alive", b"close", b"upgrade"})

Route = Callable[[bytes], HttpUpstreams | None]


class Site:
    """What an HTTP listener does with requests: the listener's name and options, ``route(host)``
    (lowercased Host without port -> the service's upstreams, None: 404), how requests are
    marked, and the listener-wide stats, access log and ticker."""

    def __init__(
        self,
        name: str,
        route: Route,
        *,
        options: HttpOptions | None = None,
        stats: HttpStats | None = None,
        listener_stats: ListenerStats | None = None,
        access_log: AccessLog | None = None,
        scheme: str = "http",
        zone: str = "",
        trust_forwarded: bool = True,
        response_headers: list[tuple[str, str]] | None = None,
        upstreams: Callable[[], list[HttpUpstreams]] | None = None,
        fixed: HttpUpstreams | None = None,
        retry_statuses: frozenset[int] = frozenset(),
        retry_budget: RetryBudget | None = None,
        zone_header: bool = False,
    ) -> None:
        self.name = name
        #: add ``X-Meshgate-Zone: <zone of the endpoint that answered>`` to responses (edges)
        self.zone_header = zone_header
        #: statuses after which an idempotent request goes once to another upstream group
        self.retry_statuses = retry_statuses
        self.retry_budget = retry_budget
        self.route = route
        #: the one service every request goes to, whatever its Host (``route`` is not called)
        self.fixed = fixed
        self.options = options or HttpOptions()
        #: refusals and requests no service took (the service's own stats otherwise)
        self.stats = stats if stats is not None else HttpStats()
        self.listener_stats = listener_stats if listener_stats is not None else ListenerStats()
        self.access_log = access_log
        self.scheme = scheme.encode()
        self.zone = zone
        #: keep X-Forwarded-For/Proto and Forwarded from clients (mesh peers, local apps); at an
        #: edge facing the internet they are replaced
        self.trust_forwarded = trust_forwarded
        self.extra_response = b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in (response_headers or []))
        self.ids = h.RequestIds()
        self.ticker = Ticker(self.options.tick)
        self._upstreams = upstreams
        self.ticker.hooks.append(self._sweep)
        #: stop keep-alive: responses carry ``Connection: close``, idle connections are closed
        self.draining = False

    def drain(self) -> None:
        """End keep-alive on every connection: idle ones close now, busy ones and new ones after
        their (next) response."""
        self.draining = True
        for member in list(self.ticker.members):
            if isinstance(member, HttpServer):
                member.drain()

    def _sweep(self, now: float) -> None:
        if self._upstreams is not None:
            for upstreams in self._upstreams():
                upstreams.sweep(now)
        if self.access_log is not None:
            self.access_log.flush()

    def protocol(self, peer: VerifiedPeer | None = None) -> HttpServer:
        """A new connection's protocol (a listener's protocol factory)."""
        return HttpServer(self, peer)

    def close(self) -> None:
        self.ticker.stop()
        if self.access_log is not None:
            self.access_log.flush()
        if self._upstreams is not None:
            for upstreams in self._upstreams():
                upstreams.close()


class Exchange:
    """One request and its response. Plain class attributes are the defaults, so making one
    costs only the few fields a request sets (this runs once per request)."""

    upstreams: HttpUpstreams | None = None
    service = ""
    method = b""
    method_label = "OTHER"
    target = b""
    version11 = True
    head = b""
    request_id = b""
    started = 0.0
    chunked = False
    body_expected = False
    request_done = False
    keep_alive = True
    upgrade = False
    is_head = False
    retryable = False
    retried = False
    leftover = b""
    client: HttpClient | None = None
    cluster: Cluster | None = None
    endpoint: Endpoint | None = None
    upstream_label = ""
    task: asyncio.Task[None] | None = None
    status = 0
    response_started = False
    response_chunked = False
    response_close_delimited = False
    close_after = False
    bytes_in = 0
    bytes_out = 0
    bytes_from_upstream = 0
    mark = 0

    def __init__(self) -> None:
        self.pending: list[bytes] = []


def _without(parts: list[bytes], names: set[bytes]) -> list[bytes]:
    """``parts`` (a first line, then header fields as name, ": ", value, CRLF) without the fields
    ``names`` lists (lowercase)."""
    kept = [parts[0]]
    for i in range(1, len(parts), 4):
        if parts[i].lower() not in names:
            kept += parts[i : i + 4]
    return kept


class HttpServer(asyncio.Protocol):
    # One per connection, idle most of its life: slots instead of an instance dict (which past
    # 30 attributes is a dict of its own, about 1.5 KB per connection).
    __slots__ = (
        "_client", "_feeding", "_forwarded_node", "_forwarding", "_head_received", "_header_bytes",
        "_header_count", "_identity_line", "_in_head", "_last", "_log_context", "_log_key",
        "_message_start", "_parts", "_refusal", "_special", "_upgrading", "_url", "_valid_host",
        "client_address", "current", "deadline", "loop", "options", "out", "parser", "peer_id",
        "queue", "reading", "receiving", "site", "state", "transport", "write_paused",
    )  # fmt: skip

    def __init__(self, site: Site, peer: VerifiedPeer | None) -> None:
        self.site = site
        self.options = site.options
        self.peer_id = str(peer.spiffe_id).encode() if peer is not None else b""
        self.parser = HttpRequestParser(self)
        self.transport: asyncio.Transport = cast(asyncio.Transport, None)
        self.loop = asyncio.get_running_loop()
        self.client_address = ""
        self.out: list[bytes] = []
        self.current: Exchange | None = None
        self.receiving: Exchange | None = None
        self.queue: deque[Exchange] = deque()
        self.state = _FIRST
        self.deadline = _INF
        self.reading = True
        self.write_paused = False
        # the request head being parsed
        self._in_head = False
        self._url = b""
        # its fields, sorted as they are parsed: the ones forwarded as they came (already as the
        # upstream head's parts: name, ": ", value, CRLF; the request line goes first) and the
        # ones the rewrite looks at (lowercase name, value)
        self._parts: list[bytes] = [b""]
        self._special: list[tuple[bytes, bytes]] = []
        self._header_count = 0
        self._header_bytes = 0  # the fields' bytes as the limit counts them (name: value CRLF)
        self._head_received = 0
        self._valid_host = b""  # the last Host value found valid on this connection
        # the access log's fields shared by this connection's requests to one upstream
        self._log_key: tuple[str, str, str] | None = None
        self._log_context = ("", "")
        self._message_start = 0.0
        self._feeding = False
        self._last: Exchange | None = None  # the last request parsed
        self._upgrading: Exchange | None = None  # an Upgrade request: the rest is for the new protocol
        self._refusal: tuple[int, str] | None = None  # a bad request behind one being answered
        # per-connection parts of every upstream head (connection_made)
        self._client = b""
        self._forwarded_node = b""
        self._identity_line = b""
        self._forwarding = b""

    # -- transport ---------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.client_address = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        site = self.site
        self._client = self.client_address.encode()
        self._forwarded_node = b"for=%s;proto=%s" % (
            h.forwarded_for(self.client_address).encode(),
            site.scheme,
        )
        self._identity_line = b"x-meshgate-client-identity: %s\r\n" % self.peer_id if self.peer_id else b""
        self._forwarding = b"x-forwarded-for: %s\r\nx-forwarded-proto: %s\r\nforwarded: %s\r\n%s" % (
            self._client, site.scheme, self._forwarded_node, self._identity_line,
        )  # fmt: skip
        self.deadline = _now() + self.options.header_timeout
        self.site.ticker.add(self)

    def data_received(self, data: bytes) -> None:
        self.site.listener_stats.bytes_in += len(data)
        state = self.state
        if state >= _LINGER:
            return  # closing: dropped
        if self._upgrading is not None or self._refusal is not None:
            if self._upgrading is not None:
                self._upgrading.leftover += data  # bytes for the upgraded protocol
            self._pause()
            return
        if self._in_head or state in (_FIRST, _IDLE):
            self._head_received += len(data)
        self._feeding = True
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade as upgrade:
            self._upgrade_request(data[upgrade.args[0] :])
        except HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, HttpError):
                self._refuse(cause.status, cause.cause)
            else:
                log.exception("HTTP engine error", exc_info=cause)
                self._refuse(500, "internal error in the proxy")
        except HttpParserInvalidMethodError:
            self._refuse(501, "unknown or invalid method")
        except HttpParserInvalidURLError:
            self._refuse(400, "invalid request target")
        except HttpParserError as exc:
            self._parse_error(str(exc))
        else:
            if self._in_head and self._head_received > self.options.max_header_bytes:
                if self._url and not self._header_count and len(self._url) > self.options.max_request_line:
                    self._refuse(414, "request line too long")
                else:
                    self._refuse(431, "request header block too large")
        finally:
            self._feeding = False
            current = self.current
            if current is not None and current.client is not None and current.client.out:
                current.client.flush()
            if self.out:
                self.flush()

    def eof_received(self) -> bool:
        if self.state == _LINGER:
            self._close()
            return False
        current = self.current
        if current is not None and current.request_done and not self._in_head:
            current.close_after = True  # answer what was asked, then close
            self._drop_queue()
            return True
        if current is not None:
            self._abort_exchange(current, "client closed before sending the whole request")
        self._close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = _CLOSED
        self.site.ticker.discard(self)
        current = self.current
        if current is not None:
            self._abort_exchange(current, "client went away")
        self._drop_queue()

    def pause_writing(self) -> None:
        self.write_paused = True
        current = self.current
        if current is not None and current.client is not None and not current.client.lost:
            current.client.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        current = self.current
        if current is not None and current.client is not None and not current.client.lost:
            current.client.transport.resume_reading()

    def flush(self) -> None:
        out = self.out
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        if self.state != _CLOSED:
            self.site.listener_stats.bytes_out += len(data)
            self.transport.write(data)

    def drain(self) -> None:
        # only a connection that has been answered and sits idle is closed: one just accepted
        # may have its first request on the wire (closing it would reset a request the client
        # sent in good faith); that request is answered with ``Connection: close``
        if self.state == _IDLE and not self._head_received:
            self._close()
        elif self.current is not None:
            self.current.close_after = True

    def pause_reading(self) -> None:
        """The upstream cannot take more request body now."""
        self._pause()

    def resume_reading(self) -> None:
        self._update_reading()

    def _pause(self) -> None:
        if self.reading and self.state != _CLOSED:
            self.reading = False
            self.transport.pause_reading()

    def _update_reading(self) -> None:
        current = self.current
        want = not self.queue and (
            current is None
            or current.request_done
            or (current.client is not None and not current.client.write_paused)
        )
        if self.state >= _LINGER:
            if self.state == _CLOSED:
                return
            want = True
        elif self._upgrading is not None or self._refusal is not None:
            want = False
        if want != self.reading:
            self.reading = want
            if want:
                self.transport.resume_reading()
            else:
                self.transport.pause_reading()

    # -- deadlines ---------------------------------------------------------------------------------

    def expired(self, now: float) -> None:
        state = self.state
        current = self.current
        if state in (_FIRST, _IDLE):
            if self._head_received:
                self._refuse(408, "request headers not received in time")
            else:
                self._close()
        elif state == _HEAD:
            self._refuse(408, "request headers not received in time")
        elif state == _BODY:
            if current is not None and current.response_started:
                self._abort_exchange(current, "request body not received in time")
                self._close()
            else:
                self._refuse(408, "request body not received in time", current)
        elif state == _UPSTREAM:
            if current is not None:
                self._upstream_error(
                    current,
                    504,
                    "timeout",
                    f"no response from upstream within {self.options.upstream_timeout:g} s",
                )
        elif state == _RESPONSE:
            if current is not None and current.bytes_from_upstream + current.bytes_in != current.mark:
                current.mark = current.bytes_from_upstream + current.bytes_in
                self.deadline = now + self.options.stall_timeout
            else:
                if current is not None:
                    self._abort_exchange(current, "response stalled")
                self._close()
        elif state == _LINGER:
            self._close()
        else:
            self.deadline = _INF

    # -- request parsing callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_head = True
        self._url = b""
        self._parts = [b""]
        self._special = []
        self._header_count = 0
        self._header_bytes = 0
        now = _now()
        self._message_start = now
        if self.current is None:
            self.state = _HEAD
            if self._head_received == 0:
                self._head_received = 1
            self.deadline = now + self.options.header_timeout

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        # Limits are checked once the head is complete (``_exchange``); until then the bytes
        # read for a head are bounded in data_received.
        self._header_count += 1
        self._header_bytes += len(name) + len(value) + 4
        lower = name.lower()
        if lower in _SPECIAL:
            self._special.append((lower, value))
        else:
            self._parts += (name, b": ", value, b"\r\n")

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_received = 0
        exchange = self._exchange()
        self.receiving = self._last = exchange
        if self.current is None:
            self._start(exchange)
        else:
            self.queue.append(exchange)
            self._pause()

    def on_body(self, body: bytes) -> None:
        exchange = self.receiving
        if exchange is None:
            return
        exchange.bytes_in += len(body)
        framed = [b"%x\r\n" % len(body), body, b"\r\n"] if exchange.chunked else [body]
        client = exchange.client
        if client is not None and exchange is self.current:
            client.out.extend(framed)
        else:
            exchange.pending.extend(framed)
            self._pause()

    def on_message_complete(self) -> None:
        exchange = self.receiving
        if exchange is None:
            return
        self.receiving = None
        exchange.request_done = True
        exchange.keep_alive = self.parser.should_keep_alive()
        if exchange.chunked:
            if exchange.client is not None and exchange is self.current:
                exchange.client.out.append(b"0\r\n\r\n")
            else:
                exchange.pending.append(b"0\r\n\r\n")
        if exchange is self.current:
            if exchange.client is not None and not exchange.response_started:
                self.state = _UPSTREAM
                self.deadline = _now() + self.options.upstream_timeout
            if not self.reading:
                self._update_reading()

    # -- the request -------------------------------------------------------------------------------

    def _exchange(self) -> Exchange:
        """Check the head just parsed and build the exchange with its upstream head.

        ``on_header`` sorted the fields as they came: every one the rewrite does not look at is
        in the upstream head's parts already; only the ones it does (Host, framing, hop-by-hop,
        forwarding) are looked at here."""
        parser = self.parser
        site = self.site
        options = self.options
        version = parser.get_http_version()
        if version != "1.1" and version != "1.0":
            raise HttpError(505, f"HTTP/{version} is not supported (HTTP/1.1 and HTTP/1.0 are)")
        method: bytes = parser.get_method()
        if method == b"CONNECT":
            raise HttpError(405, "CONNECT is not supported")
        target = self._url
        if len(target) > options.max_request_line:
            raise HttpError(414, "request line too long")
        if self._header_count > options.max_headers:
            raise HttpError(431, f"more than {options.max_headers} header fields")
        # Not guarded by ``_head_received``: it is reset before this runs, and a head pipelined
        # behind another one in the same read is not counted in it.
        if self._header_bytes + len(target) > options.max_header_bytes:
            raise HttpError(431, "request header block too large")

        parts = self._parts  # the request line goes first, once the target is known
        special = self._special

        exchange = Exchange()
        exchange.method = method
        exchange.method_label = h.KNOWN_METHODS.get(method, "OTHER")
        exchange.is_head = method == b"HEAD"
        exchange.version11 = version11 = version == "1.1"
        exchange.started = self._message_start
        exchange.close_after = site.draining
        host: bytes | None = None
        request_id = b""
        tail = self._forwarding
        if special:
            hosts = 0
            connection: list[bytes] = []
            xff: list[bytes] = []
            forwarded: list[bytes] = []
            proto = b""
            upgrade = b""
            for lower, value in special:
                if lower == b"host":
                    hosts += 1
                    host = value
                elif lower == b"content-length":
                    exchange.body_expected = value != b"0"  # llhttp checked its syntax and uniqueness
                    parts += (b"content-length", b": ", value, b"\r\n")
                elif lower == b"transfer-encoding":
                    exchange.chunked = exchange.body_expected = True  # llhttp: chunked is last
                elif lower == b"connection":
                    connection += h.connection_tokens(value)
                elif lower == h.REQUEST_ID:
                    request_id = value
                elif lower == h.X_FORWARDED_FOR:
                    xff.append(value)
                elif lower == h.FORWARDED:
                    forwarded.append(value)
                elif lower == h.X_FORWARDED_PROTO:
                    proto = value
                elif lower == b"upgrade":
                    upgrade = value
                # the caller-identity header and the other hop-by-hop fields are dropped
            if hosts > 1:
                raise HttpError(400, "more than one Host header")
            if host is not None and host != self._valid_host:  # keep-alive clients repeat theirs
                if not h.valid_host(host):
                    raise HttpError(400, "invalid Host header")
                self._valid_host = host
            if connection:
                # Content-Length stays whatever Connection says: the body is forwarded as it came,
                # and without its length the upstream would read it as the next request
                nominated = {
                    t for t in connection if t not in (b"close", b"keep-alive", b"upgrade", b"content-length")
                }
                if nominated:
                    parts = _without(parts, nominated)
                if upgrade and b"upgrade" in connection:
                    exchange.upgrade = True
                    parts += (b"upgrade: ", upgrade, b"\r\nconnection: upgrade\r\n")
            if (xff or forwarded or proto) and site.trust_forwarded:
                tail = self._forwarding_after(xff, forwarded, proto)
        if exchange.chunked:
            parts.append(b"transfer-encoding: chunked\r\n")
        exchange.retryable = not exchange.body_expected and method in h.IDEMPOTENT

        if target[:1] != b"/":
            if target == b"*" and method == b"OPTIONS":
                pass
            elif target[:7].lower() == b"http://" or target[:8].lower() == b"https://":
                url = parse_url(target)
                host = url.host + (b":%d" % url.port if url.port else b"")
                target = (url.path or b"/") + (b"?" + url.query if url.query else b"")
            else:
                raise HttpError(400, "invalid request target")
        if host is None and version11:
            raise HttpError(400, "missing Host header")

        upstreams = site.fixed
        if upstreams is None:
            name = (host or b"").lower()
            colon = name.rfind(b":")
            if colon > name.rfind(b"]"):
                name = name[:colon]
            upstreams = site.route(name)
            if upstreams is None:
                raise HttpError(404, f"no service for host {name.decode('latin-1')!r}")
        exchange.upstreams = upstreams
        exchange.service = upstreams.name
        upstreams.stats.in_flight += 1

        if not request_id or not h.valid_request_id(request_id):
            request_id = site.ids.next()
        exchange.request_id = request_id
        parts[0] = b"%s %s HTTP/1.1\r\nhost: %s\r\n" % (method, target, host or upstreams.name.encode())
        parts += (tail, b"x-request-id: ", request_id, b"\r\n\r\n")
        exchange.target = target
        exchange.head = b"".join(parts)
        return exchange

    def _forwarding_after(self, xff: list[bytes], forwarded: list[bytes], proto: bytes) -> bytes:
        """The forwarding lines when a trusted client sent its own: ours are appended to theirs."""
        scheme = self.site.scheme
        xff.append(self._client)
        forwarded.append(self._forwarded_node)
        return b"x-forwarded-for: %s\r\nx-forwarded-proto: %s\r\nforwarded: %s\r\n%s" % (
            b", ".join(xff), proto or scheme, b", ".join(forwarded), self._identity_line,
        )  # fmt: skip

    def _start(self, exchange: Exchange) -> None:
        self.current = exchange
        if exchange.request_done:
            self.state = _UPSTREAM
        else:
            self.state = _BODY
            self.deadline = exchange.started + self.options.request_timeout
        upstreams = exchange.upstreams
        assert upstreams is not None
        if self.site.retry_budget is not None:
            self.site.retry_budget.request()
        picked = upstreams.pick()
        if picked is None:
            self._upstream_error(exchange, 503, "no_endpoint", f"no healthy endpoint for {upstreams.name!r}")
            return
        cluster, endpoint = picked
        client = upstreams.idle(endpoint)
        if client is not None:
            self._bind(exchange, cluster, endpoint, client)
            return
        self._pause()
        exchange.task = self.loop.create_task(self._connect(exchange, cluster, endpoint))

    async def _connect(self, exchange: Exchange, cluster: Cluster, endpoint: Endpoint) -> None:
        upstreams = exchange.upstreams
        assert upstreams is not None
        tried: list[Endpoint] = []
        last: UpstreamError | None = None
        picked: tuple[Cluster, Endpoint] | None = (cluster, endpoint)
        for _ in range(max(self.options.connect_attempts, 1)):
            if picked is None:
                break
            cluster, endpoint = picked
            tried.append(endpoint)
            try:
                client = await upstreams.connect(cluster, endpoint)
            except UpstreamError as exc:
                cluster.report(endpoint, ok=False)
                last = exc
                picked = upstreams.pick(tried)
                continue
            cluster.report(endpoint, ok=True)
            if exchange is not self.current or self.state >= _LINGER:
                upstreams.release(client, _now())
                return
            exchange.task = None
            self._bind(exchange, cluster, endpoint, client)
            if client.out:
                client.flush()
            if self.out:
                self.flush()
            return
        exchange.task = None
        if exchange is not self.current:
            return
        if last is None:
            self._upstream_error(exchange, 503, "no_endpoint", f"no healthy endpoint for {upstreams.name!r}")
        else:
            kind = "connect_timeout" if last.kind == "timeout" else "connect"
            self._upstream_error(exchange, 502, kind, f"upstream connect failed: {last}")
        if self.out:
            self.flush()

    def _bind(self, exchange: Exchange, cluster: Cluster, endpoint: Endpoint, client: HttpClient) -> None:
        cluster.acquire(endpoint)
        exchange.cluster = cluster
        exchange.endpoint = endpoint
        exchange.upstream_label = client.label
        exchange.client = client
        client.bind(self, exchange)
        out = client.out
        out.append(exchange.head)
        if exchange.pending:
            out.extend(exchange.pending)
            exchange.pending = []
        if exchange.request_done and not exchange.response_started:
            self.state = _UPSTREAM
            self.deadline = _now() + self.options.upstream_timeout
        if client.write_paused:
            self._pause()
        else:
            self._update_reading()
        if self.write_paused:
            client.transport.pause_reading()
        if not self._feeding:
            client.flush()

    def _upgrade_request(self, leftover: bytes) -> None:
        """The parser stopped after an Upgrade request: what follows belongs to the new protocol."""
        exchange = self._last
        if exchange is None or not exchange.upgrade or not exchange.request_done:
            self._refuse(400, "unexpected upgrade")
            return
        self._upgrading = exchange
        exchange.leftover += leftover
        self._pause()

    # -- the response (called by HttpClient) -------------------------------------------------------

    def response_head(
        self,
        exchange: Exchange,
        status: int,
        reason: bytes,
        parts: list[bytes],
        special: list[tuple[bytes, bytes]],
    ) -> None:
        """The upstream's response head: ``parts`` holds its fields to forward as they came (name,
        ": ", value, CRLF; ``parts[0]`` is for the status line), ``special`` the hop-by-hop and
        framing ones (lowercase name, value), sorted by the client as they were parsed."""
        if exchange.response_started:
            self.upstream_failed(exchange, "protocol", "a second response head from upstream")
            return
        if status < 200 and status != 101:
            if exchange.version11:  # 1xx is not for HTTP/1.0 clients
                self.out.append(
                    b"HTTP/1.1 %d %s\r\n\r\n" % (status, reason or REASONS.get(status, "").encode())
                )
            return
        if status == 101 and not exchange.upgrade:
            self.upstream_failed(exchange, "protocol", "101 Switching Protocols to a request without Upgrade")
            return
        if status in self.site.retry_statuses and self._retry_elsewhere(exchange):
            return
        exchange.status = status
        exchange.response_started = True
        parts[0] = b"HTTP/1.1 %d %s\r\n" % (status, reason or REASONS.get(status, "").encode())
        chunked = False
        length = b""
        upgrade = b""
        connection: list[bytes] = []
        for lower, value in special:
            if lower == b"content-length":
                length = value
            elif lower == b"transfer-encoding":
                chunked = True
            elif lower == b"connection":
                if value.lower() not in _PLAIN_CONNECTION:  # the usual ones name no field
                    connection += h.connection_tokens(value)
            elif lower == b"upgrade":
                upgrade = value
        if connection:
            nominated = {t for t in connection if t not in (b"close", b"keep-alive", b"upgrade")}
            if nominated:
                parts = _without(parts, nominated)
        if length and not chunked:  # with Transfer-Encoding, Content-Length is ignored (RFC 9112 6.3)
            parts += (b"content-length: ", length, b"\r\n")
        if status == 101:
            parts += (b"upgrade: ", upgrade, b"\r\nconnection: upgrade\r\n\r\n")
            self.out.append(b"".join(parts))
            return
        if not (exchange.is_head or status == 204 or status == 304) and (chunked or not length):
            if not chunked:
                exchange.response_close_delimited = True  # ends when the upstream closes
            if exchange.version11:
                exchange.response_chunked = True
                parts.append(b"transfer-encoding: chunked\r\n")
            else:
                exchange.close_after = True  # an HTTP/1.0 client reads until we close
        if self.site.extra_response:
            parts.append(self.site.extra_response)
        if self.site.zone_header and exchange.endpoint is not None and exchange.endpoint.zone:
            parts += (b"x-meshgate-zone: ", exchange.endpoint.zone.encode(), b"\r\n")
        if exchange.close_after or not exchange.keep_alive or not exchange.request_done or exchange.upgrade:
            exchange.close_after = True
            parts.append(b"connection: close\r\n\r\n")
        elif not exchange.version11:
            parts.append(b"connection: keep-alive\r\n\r\n")
        else:
            parts.append(b"\r\n")
        self.out.append(b"".join(parts))
        self.state = _RESPONSE
        exchange.mark = exchange.bytes_from_upstream + exchange.bytes_in
        self.deadline = _now() + self.options.stall_timeout
        if exchange.is_head:
            self._finish(exchange, reusable=False)  # its Content-Length is not followed by a body

    def response_body(self, exchange: Exchange, body: bytes) -> None:
        exchange.bytes_out += len(body)
        if exchange.response_chunked:
            self.out += (b"%x\r\n" % len(body), body, b"\r\n")
        else:
            self.out.append(body)

    def response_complete(self, exchange: Exchange, upstream_keep_alive: bool) -> None:
        if exchange.status == 101:
            return  # the upgrade follows (HttpParserUpgrade)
        if exchange.response_chunked:
            self.out.append(b"0\r\n\r\n")
        self._finish(exchange, reusable=upstream_keep_alive and exchange.request_done)

    def upstream_upgraded(self, exchange: Exchange, leftover: bytes) -> None:
        """101 received: relay bytes both ways from now on."""
        client = exchange.client
        if exchange.status != 101 or client is None or exchange is not self.current:
            self.upstream_failed(exchange, "protocol", "unexpected upgrade from upstream")
            return
        if leftover:
            self.out.append(leftover)
        if self.out:
            self.flush()
        self._record(exchange)
        self._release(exchange)
        client.unbind()
        self.current = None
        self.state = _CLOSED
        self.site.ticker.discard(self)
        downstream = self.transport
        if not self.reading:
            downstream.resume_reading()
        Relay(
            downstream, client.transport, initial=exchange.leftover, listener_stats=self.site.listener_stats,
            cluster_stats=client.cluster.stats,
        )  # fmt: skip

    def upstream_failed(self, exchange: Exchange, kind: str, cause: str) -> None:
        """The upstream broke HTTP: 502 when nothing was sent to the client yet, else cut."""
        client = exchange.client
        if client is not None:
            client.unbind()
            client.transport.abort()
            exchange.client = None
        if exchange.response_started:
            if exchange.upstreams is not None:
                exchange.upstreams.stats.upstream_error(kind)
            self._abort_exchange(exchange, cause)
            self._close()
        else:
            self._upstream_error(exchange, 502, kind, cause)

    def upstream_lost(self, exchange: Exchange, client: HttpClient, exc: Exception | None) -> None:
        if exchange.client is not client:
            return
        exchange.client = None
        client.unbind()
        if exchange.response_started:
            if exchange.response_close_delimited and exc is None:
                if exchange.response_chunked:
                    self.out.append(b"0\r\n\r\n")
                self._finish(exchange, reusable=False)
            else:
                if exchange.upstreams is not None:
                    exchange.upstreams.stats.upstream_error("reset")
                self._abort_exchange(exchange, "upstream closed during the response")
                self._close()
        elif (
            exchange.retryable
            and not exchange.retried
            and client.responses > 0
            and exchange.bytes_from_upstream == 0
            and exchange.upstreams is not None
        ):
            exchange.retried = True
            exchange.upstreams.stats.retries += 1
            self._release(exchange)
            exchange.task = self.loop.create_task(self._reconnect(exchange))
        else:
            self._upstream_error(exchange, 502, "reset", "upstream closed the connection before answering")
        if self.out:
            self.flush()

    def _retry_elsewhere(self, exchange: Exchange) -> bool:
        """Send ``exchange`` to another upstream group instead of answering with this response."""
        budget, upstreams = self.site.retry_budget, exchange.upstreams
        cluster, endpoint, client = exchange.cluster, exchange.endpoint, exchange.client
        if cluster is not None and endpoint is not None:
            cluster.report(endpoint, ok=False)  # a 502/503 counts against its group, retried or not
        if (
            not exchange.retryable or exchange.retried or not exchange.request_done
            or upstreams is None or cluster is None or endpoint is None or client is None
        ):  # fmt: skip
            return False
        picked = upstreams.pick(cluster.endpoints)
        if picked is None or budget is None or not budget.allow():
            return False
        exchange.retried = True
        upstreams.stats.retries += 1
        exchange.client = None
        client.unbind()
        client.transport.abort()
        self._release(exchange)
        self.state = _CONNECTING
        self.deadline = _INF
        self._pause()
        exchange.task = self.loop.create_task(self._connect(exchange, *picked))
        return True

    async def _reconnect(self, exchange: Exchange) -> None:
        upstreams = exchange.upstreams
        assert upstreams is not None
        picked = upstreams.pick()
        if picked is None:
            self._upstream_error(exchange, 503, "no_endpoint", f"no healthy endpoint for {upstreams.name!r}")
            if self.out:
                self.flush()
            return
        self.state = _CONNECTING
        self.deadline = _INF
        await self._connect(exchange, *picked)

    # -- ending exchanges ----------------------------------------------------------------------------

    def _release(self, exchange: Exchange) -> None:
        if exchange.cluster is not None and exchange.endpoint is not None:
            exchange.cluster.release(exchange.endpoint)
            exchange.cluster = None

    def _record(self, exchange: Exchange, error: str = "") -> None:
        upstreams = exchange.upstreams
        stats = upstreams.stats if upstreams is not None else self.site.stats
        if upstreams is not None:
            stats.in_flight -= 1
            exchange.upstreams = None  # recorded once
        endpoint = exchange.endpoint
        zone = (endpoint.zone if endpoint is not None else None) or self.site.zone
        now = _now()
        stats.finished(exchange.method_label, exchange.status, zone, now - exchange.started)
        access_log = self.site.access_log
        if access_log is not None and access_log.wanted(exchange.status):
            key = (exchange.service, exchange.upstream_label, zone)
            if key != self._log_key:
                self._log_key = key
                self._log_context = access_log.context(
                    self.site.name, exchange.service, self.client_address, self.peer_id,
                    exchange.upstream_label, zone,
                )  # fmt: skip
            access_log.request(
                exchange.request_id, exchange.method, exchange.target, exchange.status, now - exchange.started,
                exchange.bytes_in, exchange.bytes_out, self._log_context, error,
            )  # fmt: skip

    def _finish(self, exchange: Exchange, *, reusable: bool) -> None:
        """The response is complete: count it, free the upstream, go on with the connection."""
        self._record(exchange)
        self._release(exchange)
        client = exchange.client
        exchange.client = None
        if client is not None:
            if reusable and not client.lost:
                if self.write_paused:
                    client.transport.resume_reading()
                client.upstreams.release(client, _now())
            else:
                client.unbind()
                client.transport.close()
        self.current = None
        if exchange.close_after or not exchange.keep_alive or not exchange.request_done:
            if exchange is self.receiving:
                self.receiving = None
            self._close_when_written()
            return
        if self._refusal is not None:
            status, cause = self._refusal
            self._refusal = None
            self._refuse(status, cause)
            return
        if self.queue:
            self._start(self.queue.popleft())
            return
        if self._in_head:
            self.state = _HEAD
            self.deadline = self._message_start + self.options.header_timeout
        else:
            self.state = _IDLE
            self.deadline = _now() + self.options.idle_timeout
        self._update_reading()

    def _abort_exchange(self, exchange: Exchange, error: str) -> None:
        """The exchange ends without a (complete) response: free what it holds."""
        if exchange.task is not None:
            exchange.task.cancel()
            exchange.task = None
        client = exchange.client
        if client is not None:
            exchange.client = None
            client.unbind()
            client.transport.abort()
        if exchange.upstreams is not None:
            self._record(exchange, error)
        self._release(exchange)
        if self.current is exchange:
            self.current = None

    def _drop_queue(self) -> None:
        """Forget the requests waiting behind the current one (the connection is ending)."""
        while self.queue:
            self._abort_exchange(self.queue.popleft(), "connection closed before this request's turn")

    def _upstream_error(self, exchange: Exchange, status: int, kind: str, cause: str) -> None:
        if exchange.upstreams is not None:
            exchange.upstreams.stats.upstream_error(kind)
        if exchange.response_started:
            self._abort_exchange(exchange, cause)
            self._close()
            return
        client = exchange.client
        if client is not None:
            exchange.client = None
            client.unbind()
            client.transport.abort()
        exchange.status = status
        self.out.append(error_response(status, cause, exchange.request_id.decode()))
        self._record(exchange, cause)
        self._release(exchange)
        self.current = None
        self._close_when_written()

    def _refuse(self, status: int, cause: str, exchange: Exchange | None = None) -> None:
        """Answer a request the proxy will not forward, then close (lingering)."""
        if self.state >= _LINGER:
            return
        if exchange is None and self.receiving is not None and self.receiving is self.current:
            exchange = self.current  # the request being answered is the bad one (its body, its TE)
        if exchange is None and self.current is not None and self._refusal is None:
            # a bad request pipelined behind one being answered: answer that one first
            self._refusal = (status, cause)
            self._drop_queue()
            self._pause()
            return
        exchange = exchange or self.current
        stats = self.site.stats
        if exchange is not None and exchange.upstreams is not None:
            stats = exchange.upstreams.stats
        stats.refusal(status)
        request_id = self.site.ids.next().decode()
        if exchange is not None:
            request_id = exchange.request_id.decode() or request_id
            if exchange.response_started:
                self._abort_exchange(exchange, cause)
                self._close()
                return
            exchange.status = status
            self._abort_exchange(exchange, cause)
        if self.site.access_log is not None and self.site.access_log.wanted(status):
            self.site.access_log.log(
                {
                    "id": request_id,
                    "listener": self.site.name,
                    "status": status,
                    "error": cause,
                    "client": self.client_address,
                    "identity": self.peer_id.decode(),
                }
            )  # fmt: skip (refusals: rare, the generic path)
        self._drop_queue()
        self.out.append(error_response(status, cause, request_id))
        self._close_when_written()

    def _parse_error(self, message: str) -> None:
        if "HTTP version" in message or "PRI" in message:
            self._refuse(505, "unsupported HTTP version")
        else:
            self._refuse(400, f"malformed request: {message}")

    def _close_when_written(self) -> None:
        """Stop here: send what is written, shut our side, drop what the client still sends for a
        moment (so it reads the response instead of a reset), then close."""
        if self.state >= _LINGER:
            return
        self._drop_queue()
        self.state = _LINGER
        self.deadline = _now() + _LINGER_TIME
        if self.out:
            self.flush()
        transport = self.transport
        if transport.can_write_eof():
            transport.write_eof()
            if not self.reading:
                self.reading = True
                transport.resume_reading()
        else:
            self._close()

    def _close(self) -> None:
        if self.state == _CLOSED:
            return
        if self.out:
            self.flush()
        self.state = _CLOSED
        self.site.ticker.discard(self)
        self.transport.close()
