"""``python -m bench.latency_loadgen SPEC.json``: an open-loop HTTPS load generator at a fixed rate.

Why not wrk or h2load: wrk is closed-loop (each connection sends its next request when the
response is in), and h2load's ``--rps`` starts every client's timer at the same instant, so its
requests leave in bursts of one per connection (50 at once every 25 ms for 2,000/s over 50
connections) and a late response delays the next send, whose latency is then measured from the
late send (coordinated omission).

Here request ``i`` is *due* at ``t0 + i / rate``, and its latency is measured from that due time
to the last byte of its response, whatever delayed it: the generator itself, a busy connection,
or the path. Sends are paced with ``select`` (microsecond timeouts; epoll's are milliseconds) on
one thread, over ``connections`` keep-alive TLS connections opened before the clock starts; a due
request goes on an idle connection at once, or waits for one (counted as ``queued``). How late
requests left (``send_lag``: the send time less the due time) tells whether the generator kept
up: the path's latency is what remains.

The spec: ``port``, ``host`` (the Host header and the SNI), ``ca_file`` (unused: the certificate
is not verified, as wrk's and h2load's are not), ``rate``, ``seconds``, ``warmup`` (seconds at
the same rate before the measured ones, not recorded), ``connections``, ``out`` (JSON written
at the end), ``timeout`` (seconds to wait for the last responses).
"""

from __future__ import annotations

import collections
import json
import math
import re
import select
import socket
import ssl
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOCALHOST = "127.0.0.1"


@dataclass
class Conn:
    sock: ssl.SSLSocket
    buffer: bytearray = field(default_factory=bytearray)
    due: float = 0.0  # the request in flight: when it was due (0: none)
    sent: float = 0.0


def _context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _connect(context: ssl.SSLContext, port: int, host: str) -> Conn:
    raw = socket.create_connection((LOCALHOST, port), timeout=10)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock = context.wrap_socket(raw, server_hostname=host)  # handshake done here, blocking
    sock.setblocking(False)
    return Conn(sock)


_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.I)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:", re.I)


def response_length(buffer: bytearray) -> tuple[int, int] | None:
    """(status, length of the whole response) once ``buffer`` holds its head; None before.
    Responses must have a Content-Length (nginx's and the proxies' do): others raise
    ``ValueError``."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buffer[: end + 2])
    if _CHUNKED.search(head):
        raise ValueError("chunked responses are not supported")
    found = _CONTENT_LENGTH.search(head)
    return int(head[9:12]), end + 4 + (int(found.group(1)) if found else 0)


def percentiles(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {k: math.nan for k in ("p50", "p90", "p99", "p999", "max", "mean")}
    ordered = sorted(samples)

    def at(q: float) -> float:
        rank = (len(ordered) - 1) * q / 100
        low = math.floor(rank)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)

    return {
        "p50": at(50),
        "p90": at(90),
        "p99": at(99),
        "p999": at(99.9),
        "max": ordered[-1],
        "mean": sum(ordered) / len(ordered),
    }


def run(spec: dict[str, Any]) -> dict[str, Any]:
    rate, seconds, warmup = float(spec["rate"]), float(spec["seconds"]), float(spec["warmup"])
    host, port = str(spec["host"]), int(spec["port"])
    request = f"GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: meshgate-bench\r\n\r\n".encode()
    context = _context()
    conns = [_connect(context, port, host) for _ in range(int(spec["connections"]))]
    by_fd = {c.sock.fileno(): c for c in conns}
    busy: set[ssl.SSLSocket] = set()
    idle = collections.deque(conns)
    waiting: collections.deque[float] = collections.deque()  # due times of requests with no connection yet
    latencies: list[float] = []
    lags: list[float] = []
    statuses: collections.Counter[str] = collections.Counter()
    errors: collections.Counter[str] = collections.Counter()
    queued = sent = 0
    interval = 1.0 / rate
    total = int((warmup + seconds) * rate)
    measured_from = warmup  # due times (relative) from here on are recorded
    t0 = time.perf_counter() + 0.05
    next_i = 0
    deadline = t0 + warmup + seconds + float(spec.get("timeout", 5.0))
    while True:
        now = time.perf_counter()
        while next_i < total and t0 + next_i * interval <= now:
            waiting.append(t0 + next_i * interval)
            next_i += 1
        while waiting and idle:
            conn = idle.popleft()
            due = waiting.popleft()
            try:
                conn.sock.send(request)
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError, OSError) as exc:
                errors[f"send: {type(exc).__name__}"] += 1
                continue  # the connection is dropped
            conn.due, conn.sent = due, time.perf_counter()
            busy.add(conn.sock)
            sent += 1
            if due - t0 >= measured_from:
                lags.append(conn.sent - due)
                if conn.sent - due > interval:
                    queued += 1
        if next_i >= total and not waiting and not busy:
            break
        now = time.perf_counter()
        if now > deadline:
            errors["no response before the end"] += len(busy) + len(waiting)
            break
        timeout = max(0.0, t0 + next_i * interval - now) if next_i < total and not waiting else 0.05
        ready, _, _ = select.select(list(busy), [], [], min(timeout, 0.05))
        for sock in ready:
            conn = by_fd[sock.fileno()]
            try:
                while True:
                    data = conn.sock.recv(65536)
                    if not data:
                        errors["closed by the server"] += 1
                        busy.discard(sock)
                        conn.due = 0.0
                        break
                    conn.buffer += data
                    if not conn.sock.pending():
                        break
            except ssl.SSLWantReadError:
                pass
            except OSError as exc:
                errors[f"recv: {type(exc).__name__}"] += 1
                busy.discard(sock)
                conn.due = 0.0
                continue
            if not conn.due:
                continue
            parsed = response_length(conn.buffer)
            if parsed is None or len(conn.buffer) < parsed[1]:
                continue
            done = time.perf_counter()
            status, length = parsed
            del conn.buffer[:length]
            if conn.due - t0 >= measured_from:
                latencies.append(done - conn.due)
                statuses[f"{status // 100}xx"] += 1
            conn.due = 0.0
            busy.discard(sock)
            idle.append(conn)
    for conn in conns:
        conn.sock.close()
    measured = len(latencies)
    return {
        "rate": rate,
        "seconds": seconds,
        "warmup": warmup,
        "connections": len(conns),
        "scheduled": int(seconds * rate),
        "sent_total": sent,
        "completed": measured,
        "achieved_rps": measured / seconds,
        "statuses": dict(statuses),
        "errors": dict(errors),
        "late_sends": queued,
        "latency_s": percentiles(latencies),
        "send_lag_s": percentiles(lags),
    }


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[1]).read_text())
    result = run(spec)
    out = Path(spec["out"])
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
