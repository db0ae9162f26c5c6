"""A recording HTTP/1.1 workload for the HTTP engine's integration tests, and a raw-socket client.

``HttpWorkload`` is a threaded server on plain sockets (no framework, one thread per connection,
keep-alive) that records the head (and raw head bytes) of every request it receives, the
connection it came on and its body's size and sha256, and counts every byte received: a test
compares ``snapshot()`` before and after to assert that nothing reached it. Its answer depends on
the request's path:

=================  ===========================================================================
``/echo``          JSON of the request as received: method, target, version, headers, body size
``/chunked?n=``    a chunked response of ``n`` parts
``/close``         a close-delimited response (no length, ``Connection: close``)
``/slow?ms=``      the default answer after ``ms`` milliseconds
``/upload``        reads a body of any size as it streams; answers its size and sha256 (JSON)
``/download?mib=``  ``mib`` MiB of ``download_block(i)`` (``x-body-sha256``: their digest)
``/ws``            the WebSocket handshake (RFC 6455), then echoes every frame (ping -> pong)
``/status?code=``  that status
``/reset``         closes the connection with a reset, answering nothing
``/hop``           answers with hop-by-hop fields (and one that ``Connection`` names)
``/rude``          answers (with a length, no ``Connection: close``), then closes the connection
anything else      ``200`` with ``ok <target>``
=================  ===========================================================================

Every response carries ``x-workload-conn`` (the connection's number). A request with ``Expect:
100-continue`` and a body gets ``100 Continue`` before its body is read.

``Response``/``read_response`` read responses from a raw socket (interim ones, chunked,
close-delimited, pipelined), ``closed_within`` tells whether the peer closed the connection.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import socket
import socketserver
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MAX_HEAD = 256 * 1024
_RAW_BODY_KEPT = 64 * 1024


class _Closed(Exception):
    """The peer closed the connection (or broke the protocol): stop serving it."""


@dataclass
class Received:
    """One request as the workload received it."""

    conn: int
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    raw_head: bytes
    body_bytes: int = 0
    body_sha256: str = ""
    body_start: bytes = b""  # the first bytes of the body (at most 64 KiB)
    continued: bool = False  # 100 Continue sent

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(urlsplit(self.target).query))

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        lower = name.lower()
        return [v for n, v in self.headers if n.lower() == lower]

    @property
    def names(self) -> set[str]:
        return {n.lower() for n, _ in self.headers}


class _Conn:
    """A socket with a read buffer; counts (into the server) every byte it receives."""

    def __init__(self, sock: socket.socket, server: HttpWorkload) -> None:
        self.sock = sock
        self.server = server
        self.buffer = bytearray()

    def _fill(self, size: int = 65536) -> None:
        try:
            data = self.sock.recv(size)
        except OSError as exc:
            raise _Closed from exc
        if not data:
            raise _Closed
        self.server.count(len(data))
        self.buffer += data

    def head(self) -> bytes | None:
        """Bytes up to the end of a request head (None: the connection closed between requests)."""
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end >= 0:
                head = bytes(self.buffer[: end + 4])
                del self.buffer[: end + 4]
                return head
            if len(self.buffer) > _MAX_HEAD:
                raise _Closed
            try:
                self._fill()
            except _Closed:
                if self.buffer:
                    raise
                return None

    def line(self) -> bytes:
        while True:
            end = self.buffer.find(b"\r\n")
            if end >= 0:
                line = bytes(self.buffer[:end])
                del self.buffer[: end + 2]
                return line
            if len(self.buffer) > _MAX_HEAD:
                raise _Closed
            self._fill()

    def some(self, most: int) -> bytes:
        if not self.buffer:
            self._fill(max(most, 65536) if most > 65536 else 65536)
        data = bytes(self.buffer[:most])
        del self.buffer[:most]
        return data

    def exact(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._fill()
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise _Closed from exc


def _response(status: int, body: bytes, conn: int, *, close: bool, kind: str = "text/plain") -> bytes:
    reasons = {
        200: "OK",
        204: "No Content",
        304: "Not Modified",
        404: "Not Found",
        500: "Internal Server Error",
    }
    head = f"HTTP/1.1 {status} {reasons.get(status, 'Status')}\r\nx-workload-conn: {conn}\r\n"
    if status not in (204, 304):
        head += f"content-type: {kind}\r\ncontent-length: {len(body)}\r\n"
    else:
        body = b""
    if close:
        head += "connection: close\r\n"
    return (head + "\r\n").encode("latin-1") + body


class _Handler(socketserver.BaseRequestHandler):
    server: HttpWorkload

    def handle(self) -> None:
        server = self.server
        sock: socket.socket = self.request
        number = server.opened(sock)
        conn = _Conn(sock, server)
        try:
            while self._one(conn, number):
                pass
        except _Closed:
            pass
        finally:
            server.closed(sock)

    def _one(self, conn: _Conn, number: int) -> bool:
        """Serve one request; False when the connection ends."""
        head = conn.head()
        if head is None:
            return False
        lines = head[:-4].split(b"\r\n")
        parts = lines[0].decode("latin-1").split(" ")
        if len(parts) != 3:
            raise _Closed
        method, target, version = parts
        headers = []
        for line in lines[1:]:
            name, _, value = line.decode("latin-1").partition(":")
            headers.append((name, value.strip()))
        request = Received(number, method, target, version, headers, head)
        self.server.record(request)
        connection = {t.strip().lower() for t in ",".join(request.all("connection")).split(",")}
        close = "close" in connection or (version == "HTTP/1.0" and "keep-alive" not in connection)
        path, query = request.path, request.query

        chunked = "chunked" in (request.header("transfer-encoding") or "").lower()
        length = int(request.header("content-length") or 0)
        has_body = chunked or length > 0
        if has_body and (request.header("expect") or "").lower() == "100-continue":
            conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.continued = True
        if path == "/reset":
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            raise _Closed
        self._read_body(conn, request, chunked, length)

        if path == "/ws":
            return self._websocket(conn, request)
        if path == "/echo":
            body = json.dumps({
                "method": method, "target": target, "version": version, "headers": headers,
                "conn": number, "body_bytes": request.body_bytes,
            }).encode()  # fmt: skip
            conn.send(_response(200, body, number, close=close, kind="application/json"))
        elif path == "/upload":
            body = json.dumps({"bytes": request.body_bytes, "sha256": request.body_sha256}).encode()
            conn.send(_response(200, body, number, close=close))
        elif path == "/download":
            blocks = int(query.get("mib", "1"))
            digest = hashlib.sha256()
            for i in range(blocks):
                digest.update(download_block(i))
            conn.send(
                f"HTTP/1.1 200 OK\r\nx-workload-conn: {number}\r\ncontent-type: application/octet-stream\r\n"
                f"content-length: {blocks << 20}\r\nx-body-sha256: {digest.hexdigest()}\r\n\r\n".encode()
            )
            for i in range(blocks):
                conn.send(download_block(i))
        elif path == "/chunked":
            parts_out = [f"part {i}\n".encode() for i in range(int(query.get("n", "3")))]
            out = [f"HTTP/1.1 200 OK\r\nx-workload-conn: {number}\r\ntransfer-encoding: chunked\r\n".encode()]
            out.append(b"connection: close\r\n\r\n" if close else b"\r\n")
            out += [b"%x\r\n%s\r\n" % (len(p), p) for p in parts_out]
            out.append(b"0\r\n\r\n")
            conn.send(b"".join(out))
        elif path == "/close":
            conn.send(
                b"HTTP/1.1 200 OK\r\nx-workload-conn: %d\r\nconnection: close\r\n\r\nclose-delimited body\n"
                % number
            )
            return False
        elif path == "/hop":
            conn.send(
                f"HTTP/1.1 200 OK\r\nx-workload-conn: {number}\r\nConnection: X-Resp-Secret\r\n"
                "X-Resp-Secret: nominated\r\nKeep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\n"
                "Proxy-Connection: keep-alive\r\nTrailer: X-T\r\nUpgrade: h2c\r\nX-Resp-Kept: yes\r\n"
                "content-length: 4\r\n\r\nhop\n".encode()
            )
        elif path == "/rude":
            conn.send(_response(200, b"rude\n", number, close=False))
            return False
        elif path == "/status":
            code = int(query.get("code", "200"))
            conn.send(_response(code, f"status {code}\n".encode(), number, close=close))
        else:
            if path == "/slow":
                time.sleep(int(query.get("ms", "1000")) / 1000)
            conn.send(_response(200, f"ok {target}\n".encode(), number, close=close))
        return not close

    def _read_body(self, conn: _Conn, request: Received, chunked: bool, length: int) -> None:
        digest = hashlib.sha256()
        kept = bytearray()
        total = 0

        def take(data: bytes) -> None:
            nonlocal total
            digest.update(data)
            total += len(data)
            if len(kept) < _RAW_BODY_KEPT:
                kept.extend(data[: _RAW_BODY_KEPT - len(kept)])

        if chunked:
            while True:
                size = int(conn.line().split(b";")[0].strip(), 16)
                if size == 0:
                    while conn.line():  # trailers
                        pass
                    break
                while size:
                    data = conn.some(min(size, 1 << 20))
                    take(data)
                    size -= len(data)
                conn.exact(2)
        else:
            remaining = length
            while remaining:
                data = conn.some(min(remaining, 1 << 20))
                take(data)
                remaining -= len(data)
        request.body_bytes = total
        request.body_sha256 = digest.hexdigest()
        request.body_start = bytes(kept)

    def _websocket(self, conn: _Conn, request: Received) -> bool:
        key = request.header("sec-websocket-key")
        if key is None or (request.header("upgrade") or "").lower() != "websocket":
            conn.send(_response(400, b"not a websocket handshake\n", request.conn, close=True))
            return False
        accept = ws_accept(key)
        conn.send(
            (
                "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
                f"sec-websocket-accept: {accept}\r\nx-workload-conn: {request.conn}\r\n\r\n"
            ).encode()
        )
        while True:
            opcode, payload = read_frame(conn.exact)
            if opcode == 0x8:  # close: answer it and end
                conn.send(frame(0x8, payload[:2]))
                return False
            conn.send(frame(0xA if opcode == 0x9 else opcode, payload))


_BLOCK = hashlib.shake_256(b"meshgate download").digest(1 << 20)


def download_block(i: int) -> bytes:
    """The ``i``-th MiB of a ``/download`` body (no two alike)."""
    return i.to_bytes(4, "big") + _BLOCK[4:]


def ws_accept(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key`` (RFC 6455 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()  # noqa: S324 (RFC 6455)


def frame(opcode: int, payload: bytes, *, mask: bool = False) -> bytes:
    """One final WebSocket frame (clients mask, servers do not)."""
    head = bytearray([0x80 | opcode])
    size = len(payload)
    bit = 0x80 if mask else 0
    if size < 126:
        head.append(bit | size)
    elif size < 1 << 16:
        head.append(bit | 126)
        head += struct.pack("!H", size)
    else:
        head.append(bit | 127)
        head += struct.pack("!Q", size)
    if mask:
        key = os.urandom(4)
        head += key
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes(head) + payload


def read_frame(exact: Any) -> tuple[int, bytes]:
    """(opcode, unmasked payload) of the next frame, ``exact(n)`` giving the next n bytes."""
    first, second = exact(2)
    size = second & 0x7F
    if size == 126:
        size = struct.unpack("!H", exact(2))[0]
    elif size == 127:
        size = struct.unpack("!Q", exact(8))[0]
    key = exact(4) if second & 0x80 else b""
    payload = exact(size) if size else b""
    if key:
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return first & 0x0F, payload


class HttpWorkload(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def __init__(self, name: str, *, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.name = name
        self.lock = threading.Lock()
        self.requests: list[Received] = []
        self.bytes_received = 0
        #: connections accepted (health-check probes included)
        self.accepted = 0
        self._open: set[socket.socket] = set()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True, name=f"workload-{name}")

    @property
    def port(self) -> int:
        port: int = self.server_address[1]
        return port

    # -- records -------------------------------------------------------------------------------

    def opened(self, sock: socket.socket) -> int:
        with self.lock:
            self.accepted += 1
            self._open.add(sock)
            return self.accepted

    def closed(self, sock: socket.socket) -> None:
        with self.lock:
            self._open.discard(sock)

    def count(self, size: int) -> None:
        with self.lock:
            self.bytes_received += size

    def record(self, request: Received) -> None:
        with self.lock:
            self.requests.append(request)

    def snapshot(self) -> tuple[int, int]:
        """(requests, bytes) received so far: equal before and after means nothing arrived."""
        with self.lock:
            return len(self.requests), self.bytes_received

    def since(self, mark: tuple[int, int]) -> list[Received]:
        with self.lock:
            return self.requests[mark[0] :]

    def find(self, predicate: Any) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if predicate(r)]

    # -- life ----------------------------------------------------------------------------------

    def start(self) -> HttpWorkload:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut every open connection (pooled ones of a proxy included)."""
        self.shutdown()
        self.server_close()
        with self.lock:
            open_now = list(self._open)
        for sock in open_now:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)

    def __enter__(self) -> HttpWorkload:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# -- a raw-socket client ------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    reason: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes
    interim: list[int] = field(default_factory=list)  # 1xx statuses received before this one
    raw_head: bytes = b""

    def header(self, name: str) -> str | None:
        lower = name.lower()
        return next((v for n, v in self.headers if n.lower() == lower), None)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)


class Reader:
    """Reads HTTP/1.1 responses, one after another, from a connected socket."""

    def __init__(self, sock: socket.socket, timeout: float = 10.0) -> None:
        self.sock = sock
        self.timeout = timeout
        self.buffer = bytearray()
        self.eof = False

    def _fill(self) -> None:
        self.sock.settimeout(self.timeout)
        data = self.sock.recv(65536)
        if not data:
            self.eof = True
            raise ConnectionError("closed by the peer")
        self.buffer += data

    def _until(self, marker: bytes) -> bytes:
        while (end := self.buffer.find(marker)) < 0:
            self._fill()
        data = bytes(self.buffer[:end])
        del self.buffer[: end + len(marker)]
        return data

    def _exact(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._fill()
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def exact(self, size: int) -> bytes:
        return self._exact(size)

    def response(self, *, head_request: bool = False) -> Response:
        interim: list[int] = []
        while True:
            raw = self._until(b"\r\n\r\n")
            lines = raw.decode("latin-1").split("\r\n")
            version, status_text, *rest = lines[0].split(" ", 2)
            status = int(status_text)
            headers = [(n, v.strip()) for n, _, v in (line.partition(":") for line in lines[1:])]
            if 100 <= status < 200 and status != 101:
                interim.append(status)
                continue
            break
        response = Response(status, rest[0] if rest else "", version, headers, b"", interim, raw)
        te = (response.header("transfer-encoding") or "").lower()
        length = response.header("content-length")
        if head_request or status in (101, 204, 304):
            return response
        if "chunked" in te:
            body = bytearray()
            while True:
                size = int(self._until(b"\r\n").split(b";")[0], 16)
                if size == 0:
                    while self._until(b"\r\n"):
                        pass
                    break
                body += self._exact(size)
                self._exact(2)
            response.body = bytes(body)
        elif length is not None:
            response.body = self._exact(int(length))
        else:  # close-delimited
            while True:
                try:
                    self._fill()
                except ConnectionError:
                    break
            response.body = bytes(self.buffer)
            self.buffer.clear()
        return response


def request(port: int, data: bytes, timeout: float = 10.0) -> Response:
    """Send ``data`` on a new connection to 127.0.0.1:``port``; read one response."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return Reader(sock, timeout).response()


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """True when the peer closes (EOF or reset) within ``seconds``, reading and dropping any data."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
    return False


def cpu_seconds(pid: int) -> float:
    """A process's user + system CPU time so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    """A process's resident set size (VmRSS) in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise ValueError(f"no VmRSS for {pid}")
