"""The retry budget: a floor of retries, plus a fraction of the requests of the last window (two
half-windows), counted on an injected clock."""

from __future__ import annotations

import pytest

from meshgate.proxy.http.retry_budget import RetryBudget


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def allowed(budget: RetryBudget, tries: int) -> int:
    return sum(budget.allow() for _ in range(tries))


def test_the_floor_allows_a_few_retries_before_any_request() -> None:
    budget = RetryBudget(ratio=0.2, minimum=3, clock=Clock())
    assert allowed(budget, 10) == 3
    assert budget.exhausted == 7  # every refusal is counted


def test_retries_may_add_the_ratio_of_the_requests_on_top_of_the_floor() -> None:
    budget = RetryBudget(ratio=0.2, minimum=2, clock=Clock())
    for _ in range(50):
        budget.request()
    assert allowed(budget, 30) == 2 + 10
    assert budget.exhausted == 18
    for _ in range(5):  # five more requests: one more retry
        budget.request()
    assert allowed(budget, 3) == 1


def test_a_zero_budget_refuses_every_retry() -> None:
    budget = RetryBudget(ratio=0.0, minimum=0, clock=Clock())
    for _ in range(1000):
        budget.request()
    assert not budget.allow()
    assert budget.exhausted == 1


def test_the_full_ratio_allows_one_retry_per_request() -> None:
    budget = RetryBudget(ratio=1.0, minimum=0, clock=Clock())
    for _ in range(7):
        budget.request()
    assert allowed(budget, 10) == 7


def test_the_previous_half_window_still_counts_and_older_ones_do_not() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.5, minimum=0, window=10.0, clock=clock)
    for _ in range(20):
        budget.request()
    assert allowed(budget, 4) == 4  # 4 of the 10 retries the 20 requests allow
    clock.now += 5.0  # one half-window later: those requests and retries are the previous half's
    assert allowed(budget, 10) == 6
    clock.now += 4.9  # still within the same half-window
    assert not budget.allow()
    clock.now += 0.1  # the first half is gone with its requests and retries
    assert not budget.allow()  # no request left in the window, no floor
    for _ in range(14):  # 7 retries, 6 of them spent in the previous half
        budget.request()
    assert allowed(budget, 5) == 1
    clock.now += 5.0  # now those 6 are gone: 7 for the 14 requests, 1 spent
    assert allowed(budget, 10) == 6


def test_retries_spent_in_the_previous_half_window_are_still_spent() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.5, minimum=0, window=10.0, clock=clock)
    for _ in range(10):
        budget.request()
    assert allowed(budget, 5) == 5
    clock.now += 6.0
    for _ in range(4):  # 14 requests in the window: 7 retries, 5 of them spent
        budget.request()
    assert allowed(budget, 5) == 2


def test_after_a_long_quiet_time_the_window_starts_again() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.2, minimum=1, window=10.0, clock=clock)
    for _ in range(100):
        budget.request()
    assert allowed(budget, 100) == 21
    clock.now += 3600.0
    assert allowed(budget, 5) == 1  # the floor only
    for _ in range(10):
        budget.request()
    assert allowed(budget, 5) == 2
    assert budget.exhausted == 79 + 4 + 3


@pytest.mark.parametrize(
    "kwargs",
    [{"ratio": -0.1}, {"ratio": 1.5}, {"minimum": -1}, {"window": 0.0}, {"window": -10.0}],
)
def test_nonsense_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        RetryBudget(**kwargs)  # type: ignore[arg-type]
