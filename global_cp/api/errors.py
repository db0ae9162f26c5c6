"""Every refusal as JSON: ``{"error": {"status", "reason", "message", "violations"}}``."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web

from global_cp.errors import PermissionDenied, TooBusy, Unauthenticated
from meshgate.resources.selectors import SelectorError
from meshgate.resources.violations import ValidationFailed, Violation
from meshgate.store.errors import (
    AlreadyExists,
    Compacted,
    Conflict,
    Indeterminate,
    NotFound,
    TooLarge,
    Unavailable,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(
    status: int,
    reason: str,
    message: str,
    violations: Sequence[Violation] = (),
    headers: dict[str, str] | None = None,
) -> web.Response:
    body: dict[str, object] = {"status": status, "reason": reason, "message": message}
    if violations:
        body["violations"] = [v.to_dict() for v in violations]
    return web.json_response({"error": body}, status=status, headers=headers)


class BadRequest(Exception):
    def __init__(self, message: str, violations: Sequence[Violation] = ()) -> None:
        super().__init__(message)
        self.violations = violations


def to_response(exc: Exception) -> web.Response | None:
    match exc:
        case ValidationFailed(violations=violations):
            n = len(violations)
            return error_response(400, "Invalid", f"{n} violation(s); nothing was written", violations)
        case BadRequest():
            return error_response(400, "BadRequest", str(exc), exc.violations)
        case SelectorError():
            return error_response(400, "BadRequest", f"labelSelector: {exc}")
        case Unauthenticated():
            return error_response(401, "Unauthorized", str(exc), headers={"WWW-Authenticate": "Bearer"})
        case PermissionDenied():
            return error_response(403, "Forbidden", str(exc))
        case NotFound():
            return error_response(404, "NotFound", str(exc))
        case AlreadyExists():
            return error_response(409, "AlreadyExists", str(exc))
        case Conflict():
            return error_response(409, "Conflict", str(exc))
        case TooBusy():
            return error_response(409, "Conflict", str(exc), headers={"Retry-After": "1"})
        case Compacted():
            return error_response(410, "Expired", str(exc))
        case TooLarge():
            return error_response(413, "TooLarge", str(exc))
        case Indeterminate(retry_after=retry):
            return error_response(
                503,
                "Indeterminate",
                f"{exc}; the write may or may not have been applied: read before retrying",
                headers={"Retry-After": str(max(1, round(retry)))},
            )
        case Unavailable(retry_after=retry):
            return error_response(
                503,
                "StoreUnavailable",
                f"{exc}; nothing was written, retry later",
                headers={"Retry-After": str(max(1, round(retry)))},
            )
    return None


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge as exc:
        return error_response(413, "TooLarge", f"request body over the limit ({exc.text})")
    except web.HTTPException as exc:
        if exc.status >= 400:
            return error_response(exc.status, exc.reason, exc.text or exc.reason)
        raise
    except json.JSONDecodeError as exc:
        return error_response(400, "BadRequest", f"invalid JSON: {exc}")
    except Exception as exc:
        response = to_response(exc)
        if response is None:
            raise
        return response
