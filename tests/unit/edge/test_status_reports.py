"""When an edge registers its EdgeStatus again: on a real change, not on RTT jitter."""

from __future__ import annotations

from typing import Any

from edge.status import worth_reporting


def status(*rtts: float | None, state: str = "announced", reachable: bool = True) -> dict[str, Any]:
    zones = [
        {"zone": f"z{i}", "reachable": reachable, "rttMs": rtt, "ejected": False}
        for i, rtt in enumerate(rtts)
    ]
    return {"name": "edge-eu", "vips": [{"address": "203.0.113.10", "state": state}], "zones": zones}


def test_the_first_status_is_sent() -> None:
    assert worth_reporting(None, status(1.0))


def test_rtt_jitter_is_not_worth_a_registration() -> None:
    sent = status(0.42, 30.0)
    assert not worth_reporting(sent, status(0.97, 30.0))  # under 1 ms of change
    assert not worth_reporting(sent, status(0.42, 35.5))  # under 20 % of 30 ms
    assert not worth_reporting(sent, sent)


def test_an_rtt_that_moved_is_worth_a_registration() -> None:
    sent = status(0.42, 30.0)
    assert worth_reporting(sent, status(1.6, 30.0))  # > 1 ms and > 20 %
    assert worth_reporting(sent, status(0.42, 40.0))
    assert worth_reporting(sent, status(0.42, None))  # no RTT any more


def test_any_other_change_is_worth_a_registration() -> None:
    sent = status(0.42)
    assert worth_reporting(sent, status(0.42, state="withdrawn"))
    assert worth_reporting(sent, status(0.42, reachable=False))
    assert worth_reporting(sent, status(0.42, 9.0))  # a zone more
