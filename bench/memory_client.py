"""``python -m bench.memory_client SPEC.json``: the process that holds the ``memory`` benchmark's
idle connections, so that none of their client-side memory is counted in the proxy measured.

It speaks on its standard streams, one JSON line per phase:

1. **warm-up** (at start): connects until one request is answered 200 (the proxy may need a
   moment to reach its upstream), then ``warmup - 1`` more connections, one request each, all
   closed again. Prints ``{"phase": "warm", ...}``.
2. on ``open`` (a line on stdin): opens ``count`` connections one after the other, sends one
   ``GET`` on each, reads the whole response (TLS handshake, request, response: the connection
   is fully set up) and keeps it open, idle. Prints ``{"phase": "open", ...}``.
3. on ``close`` (or stdin's end): counts the connections the proxy has not closed meanwhile,
   closes them all and prints ``{"phase": "closed", ...}``.

Connections are opened one at a time, so a proxy needs only one or two upstream connections of
its own for them all (its pool), whatever ``count`` is. Blocking sockets: nothing here is
measured, only held.
"""

from __future__ import annotations

import contextlib
import json
import resource
import socket
import ssl
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from meshgate.pki.tls import client_context

CONNECT_TIMEOUT = 10.0


def _raise_fd_limit(wanted: int) -> int:
    """Raise the soft limit on open files towards ``wanted`` (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def context_of(spec: dict[str, Any]) -> ssl.SSLContext | None:
    """The client's TLS context (meshgate's hardened client settings), or None for plain HTTP."""
    tls = spec.get("tls")
    if not tls:
        return None
    cert = Path(tls["cert"]).read_bytes() if tls.get("cert") else None
    key = Path(tls["key"]).read_bytes() if tls.get("key") else None
    return client_context(
        Path(tls["ca"]).read_bytes(),
        cert_chain_pem=cert,
        key_pem=key,
        server_hostname_check=bool(tls.get("check_hostname", True)),
    )


class Failed(Exception):
    """One connection that did not complete its request (the reason is the message)."""


def read_response(sock: socket.socket | ssl.SSLSocket) -> tuple[int, bool]:
    """Read one whole response; its status and whether the server said it closes the connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise Failed("closed before the response head")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        raise Failed(f"bad status line {lines[0][:60]!r}") from None
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if "content-length" in headers:
        missing = int(headers["content-length"]) - len(body)
        while missing > 0:
            chunk = sock.recv(min(missing, 65536))
            if not chunk:
                raise Failed("closed in the response body")
            missing -= len(chunk)
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        while not body.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                raise Failed("closed in the chunked response body")
            body += chunk
    else:
        raise Failed("a response without a length (it ends with the connection)")
    return status, "close" in headers.get("connection", "").lower()


class Holder:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.context = context_of(spec)
        host = spec.get("request_host") or spec["host"]
        self.request = f"GET {spec.get('path', '/')} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: meshgate-bench\r\n\r\n".encode()
        self.held: list[socket.socket | ssl.SSLSocket] = []
        self.tls: dict[str, str | None] = {}

    def one(self) -> tuple[socket.socket | ssl.SSLSocket, bool]:
        """A new connection with one request answered 200; the socket and whether the server
        said it would close it."""
        raw = socket.create_connection((self.spec["host"], self.spec["port"]), timeout=CONNECT_TIMEOUT)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no delayed-ACK stall per handshake
        sock: socket.socket | ssl.SSLSocket = raw
        try:
            if self.context is not None:
                sock = self.context.wrap_socket(raw, server_hostname=self.spec["tls"].get("sni"))
                if not self.tls:
                    cipher = sock.cipher()
                    self.tls = {"version": sock.version(), "cipher": cipher[0] if cipher else None}
            sock.sendall(self.request)
            status, closing = read_response(sock)
            if status != 200:
                raise Failed(f"status {status}")
        except BaseException:
            sock.close()
            raise
        return sock, closing

    def warm(self) -> dict[str, Any]:
        """Until one request is answered (or the deadline), then ``warmup - 1`` more; all closed."""
        started = time.monotonic()
        deadline = started + float(self.spec.get("first_deadline", 30))
        last = ""
        while True:
            try:
                sock, _ = self.one()
                sock.close()
                break
            except (OSError, Failed) as exc:
                last = f"{type(exc).__name__}: {exc}"
                if time.monotonic() > deadline:
                    return {"phase": "warm", "ok": 0, "error": f"no request answered 200 in time ({last})"}
                time.sleep(0.2)
        first = time.monotonic() - started
        ok, errors = 1, Counter[str]()
        for _ in range(int(self.spec.get("warmup", 20)) - 1):
            try:
                sock, _ = self.one()
                sock.close()
                ok += 1
            except (OSError, Failed) as exc:
                errors[f"{type(exc).__name__}: {exc}"[:120]] += 1
        return {"phase": "warm", "ok": ok, "failed": sum(errors.values()), "errors": dict(errors),
                "first_answer_s": round(first, 3), "tls": self.tls}  # fmt: skip

    def open(self) -> dict[str, Any]:
        started = time.monotonic()
        errors = Counter[str]()
        closing = 0
        for _ in range(int(self.spec["count"])):
            try:
                sock, closes = self.one()
            except (OSError, Failed) as exc:
                errors[f"{type(exc).__name__}: {exc}"[:120]] += 1
                continue
            closing += closes
            self.held.append(sock)
        return {"phase": "open", "ok": len(self.held), "failed": sum(errors.values()), "errors": dict(errors),
                "said_close": closing, "seconds": round(time.monotonic() - started, 3)}  # fmt: skip

    def close(self) -> dict[str, Any]:
        still_open = sum(connection_open(sock) for sock in self.held)
        for sock in self.held:
            with contextlib.suppress(OSError):
                sock.close()
        return {"phase": "closed", "still_open": still_open, "held": len(self.held)}


def connection_open(sock: socket.socket | ssl.SSLSocket) -> bool:
    """Nothing to read (a TLS session ticket is read and kept by OpenSSL): open and idle. An
    EOF, a reset or a TLS alert or close_notify: the proxy closed it."""
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""
    except (BlockingIOError, ssl.SSLWantReadError):
        return True
    except OSError:
        return False


def _say(message: dict[str, Any]) -> None:
    print(json.dumps(message), flush=True)


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[1]).read_text())
    _raise_fd_limit(int(spec["count"]) + 256)
    holder = Holder(spec)
    warm = holder.warm()
    _say(warm)
    if not warm["ok"]:
        return 1
    for line in sys.stdin:
        command = line.strip()
        if command == "open":
            _say(holder.open())
        elif command == "close":
            break
    _say(holder.close())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
