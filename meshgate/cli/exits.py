"""Exit codes: distinct, so scripts can tell what went wrong."""

from __future__ import annotations

import enum


class Exit(enum.IntEnum):
    OK = 0
    ERROR = 1  # unexpected
    USAGE = 2  # wrong flags (click's own)
    INVALID = 3  # the input was refused: syntax, validation, too large
    CONFLICT = 4  # changed since read, already exists, too many concurrent writers
    AUTH = 5  # missing or wrong token, or not allowed
    UNAVAILABLE = 6  # server unreachable, store unavailable, not ready
    NOT_FOUND = 7


def for_status(status: int) -> Exit:
    if status in (400, 413, 422):
        return Exit.INVALID
    if status == 409:
        return Exit.CONFLICT
    if status in (401, 403):
        return Exit.AUTH
    if status == 404:
        return Exit.NOT_FOUND
    if status in (410, 502, 503, 504):
        return Exit.UNAVAILABLE
    return Exit.ERROR
