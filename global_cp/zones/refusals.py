"""A zone turned away: logged with the reason, counted by kind of reason."""

from __future__ import annotations

import logging

from aiohttp import web

from global_cp.api.errors import error_response
from global_cp.metrics import Metrics

log = logging.getLogger("global_cp.zones")


class ZoneRefused(Exception):
    def __init__(self, status: int, reason: str, message: str, zone: str | None = None) -> None:
        super().__init__(message)
        self.status, self.reason, self.zone = status, reason, zone


def refusal_response(exc: ZoneRefused, metrics: Metrics, peer: str | None) -> web.Response:
    metrics.zone_refusals.labels(exc.reason).inc()
    log.warning(
        "zone refused: %s", exc, extra={"reason": exc.reason, "zone": exc.zone or "", "peer": peer or ""}
    )
    return error_response(exc.status, exc.reason, str(exc))
