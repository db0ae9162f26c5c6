"""A proxy's admin endpoint: ``/healthz`` (alive), ``/readyz`` (serving), ``/metrics``
(Prometheus text). A few lines of HTTP/1.0 on asyncio streams: no web framework in a proxy."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from meshgate.proxy.http.metrics import render as render_http
from meshgate.proxy.stats import Stats

Gauges = Callable[[], dict[str, float]]


@dataclass
class Admin:
    stats: Stats
    ready: Callable[[], bool]
    gauges: Gauges  # process-level values: config version, certificate expiry, zone CP link...
    server: asyncio.Server | None = None
    #: more exposition lines for /metrics (an edge's BGP metrics)
    extra_metrics: Callable[[], list[str]] | None = None
    #: a JSON document for /status (an edge's announcements, sessions and zones)
    status: Callable[[], dict[str, Any]] | None = None

    async def start(self, host: str, port: int) -> int:
        self.server = await asyncio.start_server(self._handle, host, port)
        bound: int = self.server.sockets[0].getsockname()[1]
        return bound

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                request_line = await reader.readline()
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # headers: nothing here needs them
            parts = request_line.split()
            path = parts[1].decode(errors="replace") if len(parts) >= 2 else ""
            status, body, kind = self._answer(parts[0] if parts else b"", path)
            writer.write(
                f"HTTP/1.0 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _answer(self, method: bytes, path: str) -> tuple[str, bytes, str]:
        if method != b"GET":
            return "405 Method Not Allowed", b"GET only\n", "text/plain"
        if path == "/healthz":
            return "200 OK", b"alive\n", "text/plain"
        if path == "/readyz":
            return (
                ("200 OK", b"ready\n", "text/plain")
                if self.ready()
                else ("503 Service Unavailable", b"starting\n", "text/plain")
            )
        if path == "/metrics":
            text = render(self.stats, self.gauges())
            if self.extra_metrics is not None:
                text += "".join(line + "\n" for line in self.extra_metrics())
            return "200 OK", text.encode(), "text/plain; version=0.0.4"
        if path == "/status" and self.status is not None:
            return "200 OK", json.dumps(self.status(), indent=1).encode(), "application/json"
        return "404 Not Found", b"/healthz, /readyz, /metrics\n", "text/plain"


_LISTENER = {
    "accepted": ("counter", "Connections accepted."),
    "active": ("gauge", "Connections open now."),
    "tls_handshake_failures": ("counter", "TLS handshakes that failed or timed out."),
    "peer_rejected": ("counter", "Peers whose certificate or identity was refused."),
    "bytes_in": ("counter", "Bytes received from clients."),
    "bytes_out": ("counter", "Bytes sent to clients."),
}
_BY_REASON = {
    "refused": ("listener_refused_total", "Connections refused before relaying, by reason."),
    "close_reasons": ("listener_closed_total", "Relayed connections ended, by reason."),
}
_CLUSTER = {
    "connect_attempts": ("counter", "Upstream connection attempts."),
    "connect_failures": ("counter", "Upstream connection failures of every kind."),
    "connect_timeouts": ("counter", "Upstream connection attempts that timed out."),
    "tls_failures": ("counter", "Upstream TLS handshakes that failed."),
    "identity_failures": ("counter", "Upstreams refused for their certificate or SPIFFE ID."),
    "active": ("gauge", "Upstream connections open now."),
    "ejections": ("counter", "Passive ejections of endpoints."),
    "ejected": ("gauge", "Endpoints ejected now."),
    "bytes_sent": ("counter", "Bytes sent upstream."),
    "bytes_received": ("counter", "Bytes received from upstream."),
}


def render(stats: Stats, gauges: dict[str, float]) -> str:
    snapshot = stats.snapshot()
    lines: list[str] = []
    for group, label, table in (("listener", "listener", _LISTENER), ("cluster", "cluster", _CLUSTER)):
        for field, (kind, text) in table.items():
            name = f"meshgate_proxy_{group}_{field}" + ("_total" if kind == "counter" else "")
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
            for owner, values in sorted(snapshot[f"{group}s"].items()):
                lines.append(f'{name}{{{label}="{owner}"}} {values[field]}')
    for field, (suffix, text) in _BY_REASON.items():
        name = f"meshgate_proxy_{suffix}"
        lines += [f"# HELP {name} {text}", f"# TYPE {name} counter"]
        for owner, values in sorted(snapshot["listeners"].items()):
            counts = values[field]
            assert isinstance(counts, dict)
            for reason, count in sorted(counts.items()):
                lines.append(f'{name}{{listener="{owner}",reason="{reason}"}} {count}')
    lines += render_http(stats.http)
    for name, value in sorted(gauges.items()):
        lines += [f"# TYPE {name} gauge", f"{name} {value}"]
    return "\n".join(lines) + "\n"
