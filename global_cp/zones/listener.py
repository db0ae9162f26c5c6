"""The zone-facing listener (TLS, its certificate from the mesh CA): enrollment and the two
sync streams. Operators never talk to it; zones never talk to the operator API."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from aiohttp import web

from global_cp.api.health import healthz
from global_cp.metrics import Metrics
from global_cp.zones.enroll import enroll_zone, root_document
from global_cp.zones.hub import SyncHub
from global_cp.zones.identity import authenticate_zone
from global_cp.zones.refusals import ZoneRefused, refusal_response
from global_cp.zones.trust import Trust
from meshgate.clock import Clock
from meshgate.store.errors import StoreError
from meshgate.store.interface import Store
from meshgate.sync.messages import MAX_MESSAGE_BYTES, ProtocolError

log = logging.getLogger("global_cp.zones")

MAX_ENROLL_BODY = 64 * 1024


@dataclass
class ZoneSide:
    store: Store
    trust: Trust
    clock: Clock
    metrics: Metrics
    hub: SyncHub
    heartbeat: float = 10.0


ZONE_SIDE = web.AppKey("zone_side", ZoneSide)


def build_zone_app(side: ZoneSide) -> web.Application:
    app = web.Application(client_max_size=MAX_ENROLL_BODY)
    app[ZONE_SIDE] = side
    app.add_routes(
        [
            web.get("/healthz", healthz),
            web.get("/enroll/v1/ca", _ca),
            web.post("/enroll/v1/zone", _enroll),
            web.get("/sync/v1/global-to-zone", _to_zone),
            web.get("/sync/v1/zone-to-global", _from_zone),
        ]
    )
    return app


def _peer(request: web.Request) -> str:
    return str(request.remote or "")


async def _ca(request: web.Request) -> web.Response:
    return web.json_response(root_document(request.app[ZONE_SIDE].trust))


async def _enroll(request: web.Request) -> web.Response:
    side = request.app[ZONE_SIDE]
    try:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ZoneRefused(400, "BadRequest", "the body must be JSON: {token, csr}") from None
        reply = await enroll_zone(side.store, side.trust, side.clock, body)
    except ZoneRefused as exc:
        return refusal_response(exc, side.metrics, _peer(request))
    except StoreError as exc:
        return web.json_response(
            {"error": {"status": 503, "message": str(exc)}}, status=503, headers={"Retry-After": "2"}
        )
    log.info("zone enrolled", extra={"zone": reply["zone"], "peer": _peer(request)})
    return web.json_response(reply, status=201)


async def _to_zone(request: web.Request) -> web.StreamResponse:
    return await _stream(request, "to")


async def _from_zone(request: web.Request) -> web.StreamResponse:
    return await _stream(request, "from")


async def _stream(request: web.Request, direction: str) -> web.StreamResponse:
    side = request.app[ZONE_SIDE]
    try:
        zone = await authenticate_zone(request, side.store, side.trust, side.clock)
    except ZoneRefused as exc:
        return refusal_response(exc, side.metrics, _peer(request))
    ws = web.WebSocketResponse(heartbeat=side.heartbeat, max_msg_size=MAX_MESSAGE_BYTES)
    await ws.prepare(request)
    try:
        if direction == "to":
            await side.hub.serve_to_zone(ws, zone)
        else:
            await side.hub.serve_from_zone(ws, zone)
    except ProtocolError as exc:
        side.metrics.zone_refusals.labels("protocol").inc()
        log.warning(
            "zone %s disconnected for breaking the protocol: %s",
            zone,
            exc,
            extra={"zone": zone, "reason": "protocol"},
        )
    return ws
