"""Faults validation (every violation with its path) and the delivery timeline, on canned
times."""

from __future__ import annotations

import math

import pytest

from meshgate.faults.faults import (
    MIN_PIECE,
    Faults,
    FaultsError,
    Lane,
    Piece,
    eof_time,
    jitter_offset,
    piece_size,
    schedule,
)


def paths(exc: pytest.ExceptionInfo[FaultsError]) -> dict[str, str]:
    return {v.path: v.message for v in exc.value.violations}


def test_defaults_do_nothing() -> None:
    faults = Faults()
    assert not faults.shaping
    assert faults.to_json() == {
        "delay": 0.0, "jitter": 0.0, "bandwidth": None, "reset_after": None, "stall": False, "refuse": False,
    }  # fmt: skip


def test_round_trip_through_json() -> None:
    faults = Faults(delay=0.05, jitter=0.01, bandwidth=100_000, reset_after=4096, stall=True, refuse=False)
    assert Faults.from_json(faults.to_json()) == faults
    assert Faults.from_json('{"delay": 1}') == Faults(delay=1.0)
    assert isinstance(Faults.from_json({"delay": 1}).delay, float)
    assert Faults.from_json(b"{}") == Faults()


def test_every_violation_is_reported_with_its_path() -> None:
    with pytest.raises(FaultsError) as exc:
        Faults.from_json(
            {
                "delay": "1s",
                "jitter": -0.1,
                "bandwidth": 0,
                "reset_after": 1.5,
                "stall": 1,
                "refuse": None,
                "loss": 0.1,
            }
        )
    assert paths(exc) == {
        "delay": "must be a number of seconds from 0 to 3600",
        "jitter": "must be a number of seconds from 0 to 3600",
        "bandwidth": "must be an integer >= 1 (bytes), or null",
        "reset_after": "must be an integer >= 0 (bytes), or null",
        "stall": "must be true or false",
        "refuse": "must be true or false",
        "loss": "unknown field",
    }
    assert "delay: must be a number" in str(exc.value)


@pytest.mark.parametrize(
    ("document", "path"),
    [
        ({"delay": math.nan}, "delay"),
        ({"delay": math.inf}, "delay"),
        ({"delay": 3601}, "delay"),
        ({"delay": True}, "delay"),
        ({"bandwidth": True}, "bandwidth"),
        ({"bandwidth": -5}, "bandwidth"),
        ({"reset_after": -1}, "reset_after"),
    ],
)
def test_out_of_range_values(document: dict[str, object], path: str) -> None:
    with pytest.raises(FaultsError) as exc:
        Faults.from_json(document)
    assert set(paths(exc)) == {path}


@pytest.mark.parametrize(("text", "message"), [("[1]", "must be a JSON object"), ("{", "invalid JSON")])
def test_not_an_object(text: str, message: str) -> None:
    with pytest.raises(FaultsError, match=message) as exc:
        Faults.from_json(text)
    assert set(paths(exc)) == {""}


def test_the_constructor_validates_too() -> None:
    with pytest.raises(FaultsError, match="delay"):
        Faults(delay=-1)
    assert Faults(reset_after=0).reset_after == 0


# -- timeline ---------------------------------------------------------------------------------


def test_without_faults_a_chunk_is_delivered_at_once() -> None:
    lane, pieces = schedule(Lane(), 10.0, 1000, Faults())
    assert pieces == [Piece(10.0, 0, 1000)]
    assert lane.last_delivery == 10.0


def test_delay_moves_every_chunk() -> None:
    faults = Faults(delay=0.05)
    lane, first = schedule(Lane(), 10.0, 100, faults)
    lane, second = schedule(lane, 10.01, 100, faults)
    assert first == [Piece(pytest.approx(10.05), 0, 100)]  # type: ignore[arg-type]
    assert second == [Piece(pytest.approx(10.06), 0, 100)]  # type: ignore[arg-type]


def test_jitter_never_reorders() -> None:
    faults = Faults(delay=0.05, jitter=0.04)
    lane, first = schedule(Lane(), 10.0, 100, faults, jitter=+0.04)  # due 10.09
    lane, second = schedule(lane, 10.01, 100, faults, jitter=-0.04)  # would be due 10.02
    assert first[0].at == pytest.approx(10.09)
    assert second[0].at == pytest.approx(10.09)  # held behind the first
    lane, third = schedule(lane, 10.2, 100, faults, jitter=-0.04)
    assert third[0].at == pytest.approx(10.21)


def test_jitter_larger_than_the_delay_is_clamped_at_no_delay() -> None:
    _, pieces = schedule(Lane(), 10.0, 100, Faults(delay=0.01, jitter=0.05), jitter=-0.05)
    assert pieces[0].at == 10.0


def test_jitter_offsets_span_plus_minus_jitter() -> None:
    assert jitter_offset(0.1, 0.0) == pytest.approx(-0.1)
    assert jitter_offset(0.1, 0.5) == pytest.approx(0.0)
    assert jitter_offset(0.1, 0.999999) == pytest.approx(0.1, abs=1e-5)
    assert jitter_offset(0.0, 0.7) == 0.0


def test_bandwidth_cuts_a_chunk_into_paced_pieces() -> None:
    faults = Faults(bandwidth=100_000)  # pieces of 2,000 bytes (20 ms of transmission)
    assert piece_size(100_000) == 2000
    lane, pieces = schedule(Lane(), 10.0, 5000, faults)
    assert [(p.start, p.end) for p in pieces] == [(0, 2000), (2000, 4000), (4000, 5000)]
    assert [p.at for p in pieces] == pytest.approx([10.02, 10.04, 10.05])
    assert lane.link_free == pytest.approx(10.05)

    # a chunk read while the link is busy waits for it
    lane, more = schedule(lane, 10.01, 1000, faults)
    assert [p.at for p in more] == pytest.approx([10.06])
    # an idle link starts at once
    _, later = schedule(lane, 20.0, 1000, faults)
    assert [p.at for p in later] == pytest.approx([20.01])


def test_bandwidth_and_delay_add_up() -> None:
    _, pieces = schedule(Lane(), 0.0, 4000, Faults(delay=0.1, bandwidth=100_000))
    assert [p.at for p in pieces] == pytest.approx([0.12, 0.14])


def test_small_bandwidths_use_a_minimum_piece() -> None:
    assert piece_size(1000) == MIN_PIECE
    _, pieces = schedule(Lane(), 0.0, 1024, Faults(bandwidth=1000))
    assert [p.at for p in pieces] == pytest.approx([0.512, 1.024])


def test_throughput_never_exceeds_the_cap() -> None:
    faults = Faults(bandwidth=50_000)
    lane, delivered, now = Lane(), [], 0.0
    for _ in range(50):  # a sender far faster than the cap
        lane, pieces = schedule(lane, now, 8192, faults)
        delivered += [(p.at, p.end - p.start) for p in pieces]
        now += 0.001
    last = delivered[-1][0]
    assert sum(size for _, size in delivered) / last <= 50_000 * 1.0001
    assert [at for at, _ in delivered] == sorted(at for at, _ in delivered)


def test_end_of_stream_follows_the_last_byte() -> None:
    faults = Faults(delay=0.05)
    lane, _ = schedule(Lane(), 10.0, 100, Faults(delay=0.05, jitter=0.05), jitter=0.05)  # due 10.1
    assert eof_time(lane, 10.01, faults) == pytest.approx(10.1)
    assert eof_time(lane, 11.0, faults) == pytest.approx(11.05)


def test_nothing_to_schedule() -> None:
    assert schedule(Lane(1.0, 2.0), 5.0, 0, Faults(delay=1)) == (Lane(1.0, 2.0), [])
