"""Restart delays: exponential with jitter, capped, reset after a stable run."""

from __future__ import annotations

import random

import pytest

from bgp.backoff import Backoff


def test_grows_jittered_and_capped_then_resets() -> None:
    backoff = Backoff(initial=0.5, cap=4.0, stable_after=60.0, rng=random.Random(7))
    delays = [backoff.next_delay(ran_for=1.0) for _ in range(8)]
    ceilings = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True)), delays
    assert len(set(delays)) == len(delays)  # jittered
    assert 0.25 <= backoff.next_delay(ran_for=60.0) <= 0.5


def test_bad_parameters() -> None:
    with pytest.raises(ValueError, match="initial"):
        Backoff(initial=0)
    with pytest.raises(ValueError, match="initial"):
        Backoff(initial=2, cap=1)
