"""The aiohttp application: routes and middleware, nothing started yet."""

from __future__ import annotations

from aiohttp import web

from global_cp.api import health, openapi, resources, tokens, watch
from global_cp.api.errors import error_middleware
from global_cp.api.middleware import auth_middleware, metrics_middleware
from global_cp.api.state import STATE, AppState

DEFAULT_MAX_BODY = 4 * 1024 * 1024


def build_app(state: AppState, *, max_body: int = DEFAULT_MAX_BODY) -> web.Application:
    app = web.Application(
        middlewares=[metrics_middleware, error_middleware, auth_middleware],
        client_max_size=max_body,
    )
    app[STATE] = state
    app.add_routes(
        [
            web.get("/healthz", health.healthz),
            web.get("/readyz", health.readyz),
            web.get("/metrics", health.metrics),
            web.get("/openapi.json", openapi.openapi),
            web.get("/api/v1/watch", watch.watch),
            web.post("/api/v1/tokens", tokens.create_token),
            web.get("/api/v1/meshes/{name}/ca", tokens.mesh_ca),
            *resources.routes(),
        ]
    )
    return app
