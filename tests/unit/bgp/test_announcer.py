"""The announcement state machine on a fake clock: rise/fall hysteresis, VIP set changes, the
drain sequence (keep-alive off, signalled, withdrawn by connections or deadline), cancel."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bgp.announcer import NORMAL, Announcer, Plan, Route

A, B = "203.0.113.10", "203.0.113.11"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def tick(self, seconds: float = 1.0) -> float:
        self.now += seconds
        return self.now


def healthy(announcer: Announcer, clock: Clock, *vips: str, times: int = 1, connections: int = 0) -> Plan:
    plan = None
    for _ in range(times):
        now = clock.tick()
        for vip in vips:
            announcer.observe(vip, True, "", now)
        plan = announcer.step(now, connections)
    assert plan is not None
    return plan


def sample(announcer: Announcer, clock: Clock, vip: str, ok: bool, connections: int = 0) -> Plan:
    now = clock.tick()
    announcer.observe(vip, ok, "" if ok else "listener down", now)
    return announcer.step(now, connections)


def make(**kwargs: float) -> tuple[Announcer, Clock]:
    clock = Clock()
    announcer = Announcer(rise=int(kwargs.pop("rise", 3)), fall=int(kwargs.pop("fall", 2)), **kwargs)  # type: ignore[arg-type]
    announcer.set_vips([A], clock.now)
    return announcer, clock


def announced_after_rise() -> tuple[Announcer, Clock]:
    announcer, clock = make()
    assert healthy(announcer, clock, A, times=3).routes == {A: NORMAL}
    return announcer, clock


def test_new_vips_start_withdrawn_and_rise_after_rise_healthy_samples() -> None:
    announcer, clock = make(rise=3)
    assert announcer.step(clock.now, 0).routes == {A: None}
    assert announcer.view(clock.now)[0].reason == "no health check yet"
    assert healthy(announcer, clock, A, times=2).routes == {A: None}
    assert announcer.view(clock.now)[0].reason == "rising: 2/3 healthy checks"
    plan = healthy(announcer, clock, A)
    assert plan.routes == {A: Route(draining=False, graceful_shutdown=False, prepend=False)}
    assert plan.stop_keepalive is False
    assert plan.drain is None
    view = announcer.view(clock.now)[0]
    assert (view.vip, view.state, view.since) == (A, "announced", clock.now)


def test_withdrawn_after_fall_unhealthy_samples_only() -> None:
    announcer, clock = announced_after_rise()
    since = clock.now
    assert sample(announcer, clock, A, False).routes == {A: NORMAL}
    view = announcer.view(clock.now)[0]
    assert (view.state, view.since, view.reason) == (
        "announced",
        since,
        "failing: 1/2 unhealthy checks: listener down",
    )
    assert sample(announcer, clock, A, False).routes == {A: None}
    view = announcer.view(clock.now)[0]
    assert (view.state, view.since, view.reason) == ("withdrawn", clock.now, "listener down")


def test_a_healthy_sample_resets_the_unhealthy_count_and_vice_versa() -> None:
    announcer, clock = announced_after_rise()
    for _ in range(10):  # flapping never reaches fall=2
        assert sample(announcer, clock, A, False).routes == {A: NORMAL}
        assert sample(announcer, clock, A, True).routes == {A: NORMAL}
    sample(announcer, clock, A, False)
    assert sample(announcer, clock, A, False).routes == {A: None}
    for _ in range(10):  # nor does it reach rise=3 again
        assert sample(announcer, clock, A, True).routes == {A: None}
        assert sample(announcer, clock, A, False).routes == {A: None}


def test_rise_and_fall_of_one() -> None:
    announcer, clock = make(rise=1, fall=1)
    assert sample(announcer, clock, A, True).routes == {A: NORMAL}
    assert sample(announcer, clock, A, False).routes == {A: None}


def test_vips_added_and_removed() -> None:
    announcer, clock = announced_after_rise()
    announcer.set_vips([A, B], clock.now)
    assert announcer.step(clock.now, 0).routes == {A: NORMAL, B: None}
    announcer.set_vips([B], clock.tick())
    assert announcer.step(clock.now, 0).routes == {B: None}  # A is gone: withdrawn
    announcer.observe(A, True, "", clock.now)  # a late sample of a removed VIP is ignored
    announcer.set_vips([A, B], clock.tick())
    assert announcer.step(clock.now, 0).routes == {A: None, B: None}  # back, from scratch


def test_samples_of_one_vip_do_not_move_another() -> None:
    announcer, clock = make(rise=2)
    announcer.set_vips([A, B], clock.now)
    now = clock.tick()
    announcer.observe(A, True, "", now)
    announcer.observe(B, False, "no healthy zone", now)
    now = clock.tick()
    announcer.observe(A, True, "", now)
    announcer.observe(B, False, "no healthy zone", now)
    assert announcer.step(now, 0).routes == {A: NORMAL, B: None}
    assert {v.vip: v.reason for v in announcer.view(now)}[B] == "no healthy zone"


def test_attributes_never_vary_outside_a_drain() -> None:
    announcer, clock = announced_after_rise()
    announcer.set_vips([A, B], clock.now)
    plan = healthy(announcer, clock, A, B, times=3)
    assert set(plan.routes.values()) == {NORMAL}


def drain_to_signalled(
    signals: tuple[str, ...] = ("graceful-shutdown",), **kwargs: float
) -> tuple[Announcer, Clock]:
    announcer, clock = make(**kwargs)
    healthy(announcer, clock, A, times=3)
    announcer.request_drain(clock.tick(), signals)
    started = clock.now
    plan = announcer.step(clock.now, 5)
    assert plan.stop_keepalive is True
    assert plan.routes == {A: NORMAL}  # keep-alive first, routes unchanged
    assert plan.drain is not None
    assert (plan.drain.phase, plan.drain.started_at, plan.drain.active_connections) == (
        "keepalive-off",
        started,
        5,
    )
    plan = announcer.step(clock.tick(), 5)
    assert plan.drain is not None
    assert plan.drain.phase == "signalled"
    assert plan.drain.signalled_at == clock.now
    return announcer, clock


def test_drain_signals_graceful_shutdown_then_withdraws_when_connections_drained() -> None:
    announcer, clock = drain_to_signalled(("graceful-shutdown",), drain_threshold=1)
    plan = announcer.step(clock.now, 5)
    assert plan.routes == {A: Route(draining=True, graceful_shutdown=True, prepend=False)}
    assert announcer.view(clock.now)[0].state == "draining"
    assert announcer.step(clock.tick(), 2).routes == {A: Route(True, True, False)}
    plan = announcer.step(clock.tick(), 1)
    assert plan.routes == {A: None}
    assert plan.stop_keepalive is True
    assert plan.drain is not None
    assert (plan.drain.phase, plan.drain.reason, plan.drain.withdrawn_at) == (
        "withdrawn",
        "connections drained",
        clock.now,
    )
    assert announcer.view(clock.now)[0].reason == "drained (connections drained)"


def test_drain_with_no_connections_still_signals_once_before_withdrawing() -> None:
    announcer, clock = make()
    healthy(announcer, clock, A, times=3)
    announcer.request_drain(clock.tick(), ["graceful-shutdown", "as-path-prepend"])
    phases = []
    for _ in range(3):
        plan = announcer.step(clock.tick(), 0)
        assert plan.drain is not None
        phases.append((plan.drain.phase, plan.routes[A]))
    assert phases == [
        ("keepalive-off", NORMAL),
        ("signalled", Route(draining=True, graceful_shutdown=True, prepend=True)),
        ("withdrawn", None),
    ]


def test_drain_withdraws_at_the_deadline_whatever_the_connections() -> None:
    announcer, clock = drain_to_signalled(("as-path-prepend",), drain_deadline=30.0)
    signalled = clock.now
    assert announcer.step(clock.tick(29.9), 100).routes == {A: Route(True, False, True)}
    plan = announcer.step(signalled + 30.0, 100)
    assert plan.routes == {A: None}
    assert plan.drain is not None
    assert plan.drain.reason == "deadline"


def test_a_drain_withdraws_every_vip_whatever_its_health_and_stays_withdrawn() -> None:
    announcer, clock = drain_to_signalled()
    announcer.step(clock.tick(), 0)  # withdrawn
    for _ in range(5):
        assert sample(announcer, clock, A, True).routes == {A: None}
    plan = announcer.step(clock.tick(100.0), 0)
    assert plan.routes == {A: None}
    assert plan.drain is not None
    assert plan.drain.phase == "withdrawn"


def test_a_vip_withdrawn_during_a_drain_stays_withdrawn_until_cancel() -> None:
    announcer, clock = drain_to_signalled(drain_deadline=1000.0)
    sample(announcer, clock, A, False, connections=9)
    assert sample(announcer, clock, A, False, connections=9).routes == {A: None}
    for _ in range(5):  # healthy again, rise reached, still withdrawn while draining
        assert sample(announcer, clock, A, True, connections=9).routes == {A: None}
    assert announcer.view(clock.now)[0].reason == "withdrawn during the drain"
    announcer.cancel_drain(clock.tick())
    assert announcer.step(clock.now, 9).routes == {A: NORMAL}


def test_a_vip_added_during_a_drain_is_not_announced() -> None:
    announcer, clock = drain_to_signalled(drain_deadline=1000.0)
    announcer.set_vips([A, B], clock.now)
    plan = healthy(announcer, clock, A, B, times=5, connections=9)
    assert plan.routes == {A: Route(True, True, False), B: None}


def test_cancel_returns_to_health_at_once_without_rising_again() -> None:
    announcer, clock = drain_to_signalled()
    announcer.step(clock.tick(), 0)  # withdrawn: connections drained
    announcer.cancel_drain(clock.tick())
    plan = announcer.step(clock.now, 0)
    assert plan == Plan(routes={A: NORMAL}, stop_keepalive=False, drain=None)
    view = announcer.view(clock.now)[0]
    assert (view.state, view.since) == ("announced", clock.now)


def test_cancel_during_keepalive_off_and_unhealthy_vips_stay_withdrawn() -> None:
    announcer, clock = make()
    announcer.set_vips([A, B], clock.now)
    healthy(announcer, clock, A, times=3)
    announcer.request_drain(clock.tick(), ["graceful-shutdown"])
    assert announcer.step(clock.now, 3).stop_keepalive is True
    announcer.cancel_drain(clock.tick())
    plan = announcer.step(clock.now, 3)
    assert plan.routes == {A: NORMAL, B: None}
    assert plan.stop_keepalive is False


def test_a_second_drain_request_does_not_restart_the_drain() -> None:
    announcer, clock = drain_to_signalled()
    started = announcer.drain.started_at if announcer.drain else None
    announcer.request_drain(clock.tick(), ["as-path-prepend"])
    plan = announcer.step(clock.now, 5)
    assert plan.drain is not None
    assert (plan.drain.phase, plan.drain.started_at, plan.drain.signals) == (
        "signalled",
        started,
        ("graceful-shutdown",),
    )


def test_unknown_signals_and_bad_parameters_are_refused() -> None:
    announcer, clock = make()
    with pytest.raises(ValueError, match="unknown drain signal"):
        announcer.request_drain(clock.now, ["blackhole"])
    for kwargs in (
        {"rise": 0, "fall": 1},
        {"rise": 1, "fall": 0},
        {"rise": 1, "fall": 1, "drain_threshold": -1},
    ):
        with pytest.raises(ValueError, match="must"):
            Announcer(**kwargs)  # type: ignore[arg-type]


def test_the_draining_view_says_when_the_deadline_falls() -> None:
    announcer, clock = drain_to_signalled(drain_deadline=30.0)
    view = announcer.view(clock.now + 10)[0]
    assert view.state == "draining"
    assert view.reason == "draining: graceful-shutdown; withdrawn at the latest in 20s"


@settings(max_examples=300, deadline=None)
@given(
    rise=st.integers(1, 4),
    fall=st.integers(1, 4),
    samples=st.lists(st.booleans(), max_size=40),
)
def test_hysteresis_matches_a_reference_model(rise: int, fall: int, samples: list[bool]) -> None:
    clock = Clock()
    announcer = Announcer(rise=rise, fall=fall)
    announcer.set_vips([A], clock.now)
    up, run_ok, run_bad = False, 0, 0
    for ok in samples:
        run_ok, run_bad = (run_ok + 1, 0) if ok else (0, run_bad + 1)
        if not up and run_ok >= rise:
            up = True
        elif up and run_bad >= fall:
            up = False
        now = clock.tick()
        announcer.observe(A, ok, "", now)
        assert announcer.step(now, 0).routes[A] == (NORMAL if up else None)


events = st.lists(
    st.one_of(
        st.tuples(st.just("sample"), st.sampled_from([A, B]), st.booleans()),
        st.tuples(st.just("step"), st.integers(0, 5), st.floats(0.0, 20.0)),
        st.tuples(st.just("drain"), st.sampled_from([(), ("graceful-shutdown",), ("as-path-prepend",)])),
        st.tuples(st.just("cancel")),
        st.tuples(st.just("vips"), st.sampled_from([(A,), (B,), (A, B)])),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(script=events)
def test_invariants_under_any_sequence(script: list[tuple[object, ...]]) -> None:
    """Whatever happens: routes only for set VIPs; no route while withdrawn by a drain;
    signals only while draining; once withdrawn in a drain, a VIP stays withdrawn until cancel;
    stop_keepalive exactly while a drain is on."""
    clock = Clock()
    announcer = Announcer(rise=2, fall=2, drain_threshold=1, drain_deadline=10.0)
    vips: tuple[str, ...] = (A, B)
    announcer.set_vips(vips, clock.now)
    draining = False
    withdrawn_in_drain: set[str] = set()
    for event in script:
        kind = event[0]
        if kind == "sample":
            announcer.observe(str(event[1]), bool(event[2]), "x", clock.tick())
        elif kind == "drain":
            announcer.request_drain(clock.tick(), event[1])  # type: ignore[arg-type]
            draining = True
        elif kind == "cancel":
            announcer.cancel_drain(clock.tick())
            draining, withdrawn_in_drain = False, set()
        elif kind == "vips":
            vips = event[1]  # type: ignore[assignment]
            announcer.set_vips(vips, clock.tick())
        else:
            plan = announcer.step(clock.tick(float(event[2])), int(event[1]))  # type: ignore[arg-type]
            assert set(plan.routes) == set(vips)
            assert plan.stop_keepalive is draining
            assert (plan.drain is not None) is draining
            for vip, route in plan.routes.items():
                if route is None:
                    if draining:
                        withdrawn_in_drain.add(vip)
                    continue
                assert vip not in withdrawn_in_drain
                assert route.draining is (plan.drain is not None and plan.drain.phase == "signalled")
                if not route.draining:
                    assert route == NORMAL
                assert plan.drain is None or plan.drain.phase != "withdrawn"
            states = {v.vip: v.state for v in announcer.view(clock.now)}
            assert states == {
                vip: "withdrawn" if r is None else "draining" if r.draining else "announced"
                for vip, r in plan.routes.items()
            }
