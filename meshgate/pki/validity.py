"""Validity windows: backdated for clock drift, never past the issuer's notAfter."""

from __future__ import annotations

from datetime import datetime, timedelta

from cryptography import x509

from meshgate.pki.clock import CLOCK_SKEW, as_utc


def validity_window(
    now: datetime, ttl: timedelta, issuer: x509.Certificate | None
) -> tuple[datetime, datetime]:
    """``(not_before, not_after)`` for a certificate issued at ``now`` for ``ttl``.

    notBefore is ``now - CLOCK_SKEW`` (not earlier than the issuer's notBefore); notAfter is
    ``now + ttl`` cut to the issuer's notAfter. Raises ValueError for ``ttl <= 0`` and for an
    issuer that is not valid at ``now``.
    """
    now = as_utc(now)
    if ttl <= timedelta(0):
        raise ValueError(f"ttl must be positive, got {ttl}")
    not_before = now - CLOCK_SKEW
    not_after = now + ttl
    if issuer is not None:
        if now >= issuer.not_valid_after_utc:
            raise ValueError(
                f"the issuing CA expired at {issuer.not_valid_after_utc.isoformat()}; "
                "it cannot issue at " + now.isoformat()
            )
        if now < issuer.not_valid_before_utc:
            raise ValueError(f"the issuing CA is not valid before {issuer.not_valid_before_utc.isoformat()}")
        not_before = max(not_before, issuer.not_valid_before_utc)
        not_after = min(not_after, issuer.not_valid_after_utc)
    return not_before, not_after
