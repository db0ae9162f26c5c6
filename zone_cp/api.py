"""The zone CP's HTTP API: a read-only view of the zone's effective resources, its sync
state, and the registration endpoints proxies, ingresses and edges write through."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from meshgate.clock import Clock, rfc3339
from meshgate.resources.kinds import REGISTRY
from meshgate.resources.kinds.system import SyncCheckpointSpec
from meshgate.resources.model import Resource
from meshgate.resources.validation import parse_resource
from meshgate.resources.views import api_document
from meshgate.resources.violations import ValidationFailed
from meshgate.store.errors import NotFound, StoreError
from meshgate.store.interface import Store
from zone_cp.applier import CHECKPOINT
from zone_cp.link import CONTACT, LinkState, StreamState
from zone_cp.metrics import ZoneMetrics
from zone_cp.registration import REGISTRABLE, RegistrationRefused, authorize


@dataclass
class ZoneApi:
    zone: str
    store: Store
    clock: Clock
    metrics: ZoneMetrics
    link: LinkState | None = None  # set once the zone has joined
    on_registered: Any = None


ZONE_API = web.AppKey("zone_api", ZoneApi)


def build_api(api: ZoneApi) -> web.Application:
    app = web.Application(client_max_size=1024 * 1024)
    app[ZONE_API] = api
    app.add_routes(
        [
            web.get("/healthz", lambda _r: _json({"status": "alive"})),
            web.get("/readyz", _readyz),
            web.get("/metrics", _metrics),
            web.get("/api/v1/sync", _sync),
            web.get("/api/v1/{plural}", _list),
            web.get("/api/v1/{plural}/{name}", _get),
            web.post("/api/v1/{plural}", _register),
            web.put("/api/v1/{plural}/{name}", _register),
            web.delete("/api/v1/{plural}/{name}", _deregister),
        ]
    )
    return app


async def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status)


def _error(status: int, message: str, violations: list[str] | None = None) -> web.Response:
    body: dict[str, Any] = {"status": status, "message": message}
    if violations:
        body["violations"] = violations
    return web.json_response({"error": body}, status=status)


async def _readyz(request: web.Request) -> web.Response:
    api = request.app[ZONE_API]
    if api.link is None:
        return _error(503, "not enrolled yet")
    return web.json_response({"status": "ready", "appliedVersion": api.link.applied_version})


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(
        body=generate_latest(request.app[ZONE_API].metrics.registry),
        headers={"Content-Type": CONTENT_TYPE_LATEST},
    )


def _stream(state: StreamState, clock: Clock) -> dict[str, Any]:
    since = None if state.since is None else clock.now() - timedelta(seconds=clock.monotonic() - state.since)
    return {
        "connected": state.connected,
        "since": rfc3339(since) if since else None,
        "lastError": state.last_error or None,
    }


async def _sync(request: web.Request) -> web.Response:
    api = request.app[ZONE_API]
    if api.link is None:
        return _error(503, "not enrolled yet")
    return web.json_response(
        {
            "zone": api.zone,
            "globalToZone": _stream(api.link.to_zone, api.clock),
            "zoneToGlobal": _stream(api.link.from_zone, api.clock),
            "appliedVersion": api.link.applied_version,
            "lastNack": api.link.last_nack or None,
        }
    )


def _kind(request: web.Request) -> str:
    descriptor = REGISTRY.resolve(request.match_info["plural"])
    if descriptor is None or not descriptor.exposed or descriptor.plural != request.match_info["plural"]:
        raise web.HTTPNotFound(text="no such resource type")
    return descriptor.kind


async def _freshness(api: ZoneApi) -> dict[str, Any]:
    """Cross-zone entries are only as fresh as the last word from the global CP: the moment the
    stream dropped (in this run), or else the last update applied (from disk, after a restart
    while the global CP was away)."""
    if api.link is not None and api.link.to_zone.connected:
        return {"stale": False}
    moments: list[datetime] = []
    for record in (CHECKPOINT, CONTACT):
        with contextlib.suppress(NotFound):
            at = (await api.store.get(*record)).spec_as(SyncCheckpointSpec).applied_at
            moments.append(datetime.fromisoformat(at.replace("Z", "+00:00")))
    if api.link is not None and api.link.to_zone.lost_at is not None:
        moments.append(api.clock.now() - timedelta(seconds=api.clock.monotonic() - api.link.to_zone.lost_at))
    if not moments:
        return {"stale": True, "learnedAt": None, "ageSeconds": None}
    learned = max(moments)
    age = (api.clock.now() - learned).total_seconds()
    return {"stale": True, "learnedAt": rfc3339(learned), "ageSeconds": int(max(age, 0))}


async def _view(api: ZoneApi, resource: Resource) -> dict[str, Any]:
    doc = api_document(resource)
    if resource.kind == "CrossZoneEndpoints":
        doc.setdefault("status", {})["sync"] = await _freshness(api)
    return doc


async def _list(request: web.Request) -> web.Response:
    api = request.app[ZONE_API]
    listing = await api.store.list(_kind(request))
    items = [await _view(api, r) for r in listing.items]
    return web.json_response({"kind": "List", "apiVersion": "meshgate/v1alpha1", "items": items})


async def _get(request: web.Request) -> web.Response:
    api = request.app[ZONE_API]
    try:
        resource = await api.store.get(_kind(request), request.match_info["name"])
    except NotFound:
        return _error(404, f"{request.match_info['plural']}/{request.match_info['name']} not found")
    return web.json_response(await _view(api, resource))


async def _register(request: web.Request) -> web.Response:
    api = request.app[ZONE_API]
    kind = _kind(request)
    if kind not in REGISTRABLE:
        return _error(405, f"{kind} resources come from the global CP; they are read-only here")
    try:
        resource = parse_resource(await request.json())
    except ValidationFailed as failed:
        return _error(400, "invalid document; nothing was written", [str(v) for v in failed.violations])
    except ValueError:
        return _error(400, "the body must be one JSON document")
    problems = []
    if resource.kind != kind:
        problems.append(f"kind: must be {kind}")
    if "name" in request.match_info and resource.name != request.match_info["name"]:
        problems.append("metadata.name: must match the URL")
    if REGISTRY[kind].zone_of(resource) != api.zone:
        problems.append(f"spec.zone: this is the zone CP of {api.zone!r}")
    if problems:
        return _error(400, "invalid document; nothing was written", problems)
    try:
        await authorize(api.store, api.zone, api.clock, request.headers.get("Authorization", ""), resource)
        result = await api.store.put(resource.with_store_fields(revision=None, generation=None, created=None))
    except RegistrationRefused as refused:
        api.metrics.registrations.labels("refused").inc()
        return _error(refused.status, refused.message)
    except StoreError as exc:
        return _error(503, f"cannot persist: {exc}")
    api.metrics.registrations.labels(result.outcome.value).inc()
    if api.on_registered is not None:
        api.on_registered()
    status = 201 if result.outcome.value == "created" else 200
    return web.json_response(api_document(result.resource), status=status)


async def _deregister(request: web.Request) -> web.Response:
    api = request.app[ZONE_API]
    kind = _kind(request)
    if kind not in REGISTRABLE:
        return _error(405, f"{kind} resources come from the global CP; they are read-only here")
    try:
        current = await api.store.get(kind, request.match_info["name"])
        await authorize(api.store, api.zone, api.clock, request.headers.get("Authorization", ""), current)
        await api.store.delete(kind, current.name)
    except NotFound:
        return _error(404, "not found")
    except RegistrationRefused as refused:
        return _error(refused.status, refused.message)
    except StoreError as exc:
        return _error(503, f"cannot persist: {exc}")
    if api.on_registered is not None:
        api.on_registered()
    return web.json_response({"deleted": f"{kind}/{current.name}"})
