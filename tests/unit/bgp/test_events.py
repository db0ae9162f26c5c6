"""ExaBGP 5.0.15's API output (real lines, captured against BIRD and FRR) as events; anything
else is None, never an exception."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bgp.events import Ack, NeighborChange, Notification, SpeakerShutdown, parse

FIXTURE = Path(__file__).with_name("fixtures") / "exabgp-5.0.15-api.txt"
LINES = [line for line in FIXTURE.read_text().splitlines() if line and not line.startswith("#")]


def line_with(*parts: str) -> str:
    for line in LINES:
        if all(part in line for part in parts):
            return line
    raise AssertionError(f"no captured line with {parts}")


def test_every_captured_line_is_understood() -> None:
    events = [parse(line) for line in LINES]
    assert [line for line, event in zip(LINES, events, strict=True) if event is None] == [
        "shutdown in progress"
    ]
    assert sum(isinstance(e, NeighborChange) for e in events) >= 10
    assert sum(isinstance(e, Notification) for e in events) >= 4


def test_acks() -> None:
    assert parse("done") == Ack("done")
    assert parse("error\n") == Ack("error")
    assert parse(b"shutdown\n") == Ack("shutdown")
    assert parse('{ "answer": "done", "message": "command completed" }') == Ack("done")
    assert parse('{ "answer": "error", "message": "this command does not support json output" }') == Ack(
        "error"
    )
    assert parse("shutdown in progress") is None


def test_session_up() -> None:
    event = parse(line_with('"peer": "10.99.0.1"', '"state": "up"'))
    assert event == NeighborChange(
        peer="10.99.0.1",
        local="10.99.0.2",
        peer_asn=65001,
        local_asn=65000,
        state="up",
        reason="",
        time=1795285064.5747256,
    )
    event = parse(line_with('"peer": "fd99::1"', '"state": "up"'))
    assert isinstance(event, NeighborChange)
    assert (event.peer, event.local) == ("fd99::1", "fd99::2")


@pytest.mark.parametrize(
    "reason",
    [
        "closing connection",
        "notification received (6,2)",
        "notification sent (6,2)",
        "notification sent (4,0)",
        "stop, message [shutting down]",
    ],
)
def test_session_down_carries_its_reason(reason: str) -> None:
    event = parse(line_with('"state": "down"', f'"reason": "{reason}"'))
    assert isinstance(event, NeighborChange)
    assert (event.state, event.reason) == ("down", reason)


def test_connected_without_a_local_address_yet() -> None:
    event = parse(line_with('"local": "None"', '"state": "connected"'))
    assert isinstance(event, NeighborChange)
    assert (event.state, event.local) == ("connected", "")


def test_notifications_sent_and_received() -> None:
    frr = parse(line_with("Shutdown Communication"))
    assert frr == Notification(
        peer="10.99.0.1",
        direction="receive",
        code=6,
        subcode=2,
        message='Shutdown Communication: "maintenance window"',
        time=frr.time if isinstance(frr, Notification) else 0.0,
    )
    hold = parse(line_with('"direction": "send"', '"code": 4'))
    assert isinstance(hold, Notification)
    assert (hold.direction, hold.code, hold.subcode) == ("send", 4, 0)
    ours = parse(line_with('"direction": "send"', "Administrative Shutdown"))
    assert isinstance(ours, Notification)
    assert ours.message == "\x17Administrative Shutdown"


def test_exabgp_shutting_down() -> None:
    event = parse(line_with('"notification": "shutdown"'))
    assert isinstance(event, SpeakerShutdown)


@pytest.mark.parametrize(
    "line",
    [
        "",
        "   ",
        "{",
        "[]",
        "null",
        '"done"',
        "done done",
        "DONE",
        "{}",
        '{ "type": "state" }',
        '{ "type": "state", "time": 1, "neighbor": { "address": { "peer": "x" }, "asn": {}, "state": "up" } }',
        '{ "type": "state", "time": "1", "neighbor": {} }',
        '{ "type": "state", "time": 1, "neighbor": { "address": { "local": "None", "peer": "192.0.2.1" }, '
        '"asn": { "local": 65000, "peer": 65001 }, "state": "established" } }',
        '{ "type": "state", "time": 1, "neighbor": { "address": { "local": "None", "peer": "192.0.2.1" }, '
        '"asn": { "local": 65000, "peer": "65001" }, "state": "up" } }',
        '{ "type": "notification", "time": 1, "neighbor": { "address": { "peer": "192.0.2.1" }, '
        '"direction": "sideways", "notification": { "code": 6, "subcode": 2 } } }',
        '{ "type": "update", "time": 1, "neighbor": {} }',
        '{ "answer": 1 }',
        '{ "answer": "maybe" }',
        "[" * 100000,
        b"\xff\xfe",
    ],
)
def test_garbage_is_none(line: str | bytes) -> None:
    assert parse(line) is None


@settings(deadline=None)  # a shared, noisy machine
@given(st.one_of(st.text(), st.binary()))
def test_nothing_raises(line: str | bytes) -> None:
    parse(line)


@settings(deadline=None)  # a shared, noisy machine
@given(st.sampled_from(LINES), st.integers(0, 400), st.text(max_size=5))
def test_mangled_real_lines_never_raise(line: str, cut: int, junk: str) -> None:
    parse(line[:cut] + junk + line[cut:])
