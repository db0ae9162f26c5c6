"""Cross-cutting request handling: readiness gate, authentication, metrics."""

from __future__ import annotations

import time

from aiohttp import web

from global_cp import auth
from global_cp.api.errors import Handler, error_response
from global_cp.api.state import state_of

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json"})


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = state_of(request)
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    started = time.perf_counter()
    response = await handler(request)
    state.metrics.requests.labels(request.method, route, str(response.status)).inc()
    if response.status >= 400 and isinstance(response, web.Response) and response.body:
        reason = _reason(response)
        state.metrics.rejected.labels(reason).inc()
    if not route.endswith("/watch"):
        state.metrics.latency.labels(request.method, route).observe(time.perf_counter() - started)
    return response


def _reason(response: web.Response) -> str:
    import json

    try:
        body = json.loads(response.body)  # type: ignore[arg-type]
        return str(body["error"]["reason"])
    except (ValueError, KeyError, TypeError):
        return str(response.status)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in OPEN_PATHS:
        return await handler(request)
    state = state_of(request)
    if not state.ready:
        return error_response(
            503,
            "NotReady",
            "the global CP is starting (store or bootstrap not ready)",
            headers={"Retry-After": "1"},
        )
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return error_response(
            401,
            "Unauthorized",
            "missing bearer token: pass --token or set MESHGATE_TOKEN",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not any(auth.matches(token.strip(), h) for h in state.admin_hashes):
        return error_response(
            401,
            "Unauthorized",
            "the token is not valid for this global CP",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return await handler(request)
