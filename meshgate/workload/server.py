"""The workload's HTTP server: every method and path answered 200, tagged requests recorded.

``/_meshgate/received`` (GET: the ledger as a JSON list of ``{method, path, tag, time}``, oldest
first; ``X-Received-Total`` and ``X-Received-Dropped`` say how many were recorded in all and how
many the bound has dropped) and ``/_meshgate/healthz`` (200) are the workload's own paths: never
recorded.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from meshgate.workload.ledger import Ledger

OWN_PREFIX = "/_meshgate/"
RECEIVED = "/_meshgate/received"
HEALTHZ = "/_meshgate/healthz"
TAG_HEADER = "X-Request-Tag"
SHUTDOWN_TIMEOUT = 2.0  # seconds requests in flight get after SIGTERM


@dataclass(frozen=True)
class Workload:
    name: str
    zone: str = ""
    ledger: Ledger = field(default_factory=Ledger)

    @property
    def greeting(self) -> str:
        where = f" in zone {self.zone}" if self.zone else ""
        return f"hello from {self.name}{where}\n"

    @property
    def headers(self) -> dict[str, str]:
        headers = {"X-Workload": self.name}
        if self.zone:
            headers["X-Workload-Zone"] = self.zone
        return headers


WORKLOAD = web.AppKey("workload", Workload)


def build_app(workload: Workload) -> web.Application:
    app = web.Application()
    app[WORKLOAD] = workload
    app.router.add_route("*", "/{tail:.*}", _answer)
    return app


async def _answer(request: web.Request) -> web.StreamResponse:
    workload = request.app[WORKLOAD]
    if request.path.startswith(OWN_PREFIX):
        return _own(request, workload)
    tag = request.headers.get(TAG_HEADER)
    if tag is not None:
        workload.ledger.record(request.method, request.raw_path, tag)
    async for _chunk in request.content.iter_any():  # read the body as it streams, keep none
        pass
    return web.Response(text=workload.greeting, headers=workload.headers)


def _own(request: web.Request, workload: Workload) -> web.Response:
    if request.path == HEALTHZ:
        return web.Response(text="ok\n", headers=workload.headers)
    if request.path == RECEIVED:
        if request.method not in ("GET", "HEAD"):
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])
        ledger = workload.ledger
        return web.Response(
            text=json.dumps(ledger.records()),
            content_type="application/json",
            headers={
                **workload.headers,
                "X-Received-Total": str(ledger.total),
                "X-Received-Dropped": str(ledger.dropped),
            },
        )
    raise web.HTTPNotFound(text=f"{RECEIVED}, {HEALTHZ}\n")


async def serve(workload: Workload, host: str, port: int, on_listening: Callable[[str], None]) -> None:
    """Serve until SIGTERM or SIGINT; ``on_listening`` gets the URL once bound (the signals are
    handled from before then)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    runner = web.AppRunner(build_app(workload), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        on_listening(f"http://{shown}:{bound_port}")
        await stop.wait()
    finally:
        await runner.cleanup()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
