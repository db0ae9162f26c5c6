"""The ledger: what clients were told against what workloads received."""

from __future__ import annotations

from typing import Any

from meshgate.lab.ledger import reconcile


def sent(tag: str, outcome: str = "ok", method: str = "GET", opened: float = 1.0) -> dict[str, Any]:
    return {
        "tag": tag,
        "method": method,
        "outcome": outcome,
        "opened": opened,
        "edge": "edge-eu",
        "zone": "eu-west",
    }


def got(tag: str, method: str = "GET") -> dict[str, Any]:
    return {"tag": tag, "method": method, "path": "/"}


def test_a_clean_run_holds_and_counts_who_served() -> None:
    result = reconcile([sent("r-0-1"), sent("r-0-2")], [got("r-0-1"), got("r-0-2")], run="r")
    assert result.holds
    assert (result.sent, result.acknowledged, result.failed) == (2, 2, 0)
    assert result.served_by == {"edge-eu/eu-west": 2}


def test_an_acknowledged_request_no_workload_received_is_lost() -> None:
    result = reconcile([sent("r-0-1"), sent("r-0-2")], [got("r-0-1")], run="r")
    assert not result.holds
    assert result.lost == ["r-0-2"]
    assert result.figures()["ledger"] == "BROKEN"


def test_a_post_executed_twice_breaks_the_ledger_a_get_retried_is_counted() -> None:
    records = [sent("r-0-1", method="POST"), sent("r-0-2")]
    result = reconcile(
        records, [got("r-0-1", "POST"), got("r-0-1", "POST"), got("r-0-2"), got("r-0-2")], run="r"
    )
    assert result.duplicated == ["r-0-1"]
    assert result.retried == 1
    assert not result.holds


def test_a_tag_of_this_run_nobody_sent_is_phantom_other_runs_are_ignored() -> None:
    result = reconcile([sent("r-0-1")], [got("r-0-1"), got("r-9-9"), got("other-0-1")], run="r")
    assert result.phantom == ["r-9-9"]


def test_failures_split_at_the_switch_and_executed_failures_are_counted() -> None:
    records = [
        sent("r-0-1", "reset", opened=1.0),
        sent("r-0-2", "reset", opened=5.0),
        sent("r-0-3", "http-503"),
    ]
    result = reconcile(records, [got("r-0-1")], run="r", switched_at=2.0)
    assert result.holds  # nothing acknowledged was lost
    assert (result.failed_before_switch, result.failed_after_switch) == (2, 1)
    assert result.failures == {"reset": 2, "http-503": 1}
    assert result.executed_but_failed == 1
