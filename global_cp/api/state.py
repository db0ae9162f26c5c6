"""Typed keys for what the application holds."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from global_cp.metrics import Metrics
from global_cp.service import ResourceService
from global_cp.tokens import TokenIssuer
from meshgate.clock import Clock, SystemClock
from meshgate.store.interface import Store
from meshgate.store.mirror import StoreMirror


@dataclass
class AppState:
    store: Store
    mirror: StoreMirror
    service: ResourceService
    metrics: Metrics
    admin_hashes: set[str]
    issuer: TokenIssuer | None = None
    ready: bool = False
    heartbeat: float = 15.0
    clock: Clock = field(default_factory=SystemClock)
    extra: dict[str, object] = field(default_factory=dict)


STATE = web.AppKey("state", AppState)


def state_of(request: web.Request) -> AppState:
    return request.app[STATE]


def service_of(request: web.Request) -> ResourceService:
    return request.app[STATE].service
