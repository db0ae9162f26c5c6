"""Checks for the injected clock: every function of this package takes ``now`` as a parameter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

#: How far back notBefore is set, and how much clock drift token checks forgive.
CLOCK_SKEW = timedelta(minutes=5)


def as_utc(now: datetime) -> datetime:
    """Return ``now`` in UTC; refuse a naive datetime (it has no defined instant)."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime (got a naive one)")
    return now.astimezone(UTC)
