"""``/healthz`` (alive), ``/readyz`` (store reachable, bootstrap done), ``/metrics``."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from global_cp.api.state import state_of
from meshgate.aio import within
from meshgate.store.errors import StoreError


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    state = state_of(request)
    if not state.ready:
        return web.json_response({"status": "starting"}, status=503)
    try:
        revision = await within(state.store.revision(), 2.0)
    except (StoreError, TimeoutError) as exc:
        state.metrics.ready.set(0)
        return web.json_response({"status": "store unavailable", "error": str(exc)}, status=503)
    state.metrics.ready.set(1)
    state.metrics.store_revision.set(revision)
    return web.json_response({"status": "ready", "revision": str(revision)})


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(state_of(request).metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
