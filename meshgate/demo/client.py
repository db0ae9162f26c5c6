"""The demo's HTTP client: readiness checks, the global CP's API, and requests through the edges
as a user's ``curl`` would send them (Host header; SNI and the demo CA for https)."""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from meshgate.demo.resources import HOSTNAME

TIMEOUT = aiohttp.ClientTimeout(total=5)


@dataclass(frozen=True)
class EdgeAnswer:
    """One request through an edge: who answered, from which zone, how fast."""

    status: int = 0
    zone: str = ""  # X-Meshgate-Zone: the zone the edge sent it to
    edge: str = ""  # X-Meshgate-Edge
    workload: str = ""  # X-Workload: the instance that answered
    ms: float = 0.0
    error: str = ""

    @property
    def served(self) -> bool:
        """Answered 200 by a workload through a zone."""
        return self.status == 200 and bool(self.zone) and bool(self.workload)


class DemoClient:
    def __init__(self) -> None:
        self.session = aiohttp.ClientSession(timeout=TIMEOUT)
        self._tls: ssl.SSLContext | None = None

    async def close(self) -> None:
        await self.session.close()

    async def ok(self, url: str) -> bool:
        """Answered 200 (anything else, or no answer, is not ready yet)."""
        try:
            async with self.session.get(url) as response:
                await response.read()
                return response.status == 200
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False

    async def call(self, method: str, url: str, token: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"}
        async with self.session.request(method, url, json=body, headers=headers) as response:
            return response.status, await response.json(content_type=None)

    def trust(self, ca_file: Path) -> None:
        self._tls = ssl.create_default_context(cafile=str(ca_file))

    async def through_edge(self, url: str) -> EdgeAnswer:
        """``url`` is http(s)://HOST:PORT/...; sent with ``Host: HOSTNAME`` (and SNI for https)."""
        https = url.startswith("https:")
        extra: dict[str, Any] = {"ssl": self._tls, "server_hostname": HOSTNAME} if https else {}
        started = time.monotonic()
        try:
            async with self.session.get(url, headers={"Host": HOSTNAME}, **extra) as response:
                await response.read()
                h = response.headers
                return EdgeAnswer(
                    response.status, h.get("X-Meshgate-Zone", ""), h.get("X-Meshgate-Edge", ""),
                    h.get("X-Workload", ""), (time.monotonic() - started) * 1000,
                )  # fmt: skip
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return EdgeAnswer(error=str(exc) or type(exc).__name__, ms=(time.monotonic() - started) * 1000)
