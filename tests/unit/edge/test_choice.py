"""Which zone serves a global service's next request: the ZoneBook's measurements and ejections,
the chooser's order (priorities, RTT, near ties, hysteresis, fallbacks) and weights. No I/O."""

from __future__ import annotations

import itertools
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.choice import RTT_SMOOTHING, ZoneBook, ZoneChooser, pick_first
from edge.runtime import GlobalService, ServingZone, ZoneEndpoint

SVC = "web"


def zone(
    name: str, *, priority: int = 0, weight: int | None = None, distance: float | None = None,
    healthy: int = 1, endpoints: int = 1,
) -> ServingZone:  # fmt: skip
    eps = tuple(ZoneEndpoint(f"10.0.{i}.1", 10002, f"{SVC}.{name}.svc.meshgate") for i in range(endpoints))
    return ServingZone(name, priority, weight, distance, healthy, eps)


def service(*zones: ServingZone) -> GlobalService:
    return GlobalService(SVC, SVC, f"spiffe://mesh.example/svc/{SVC}", ("www.example.com",),
                         ("203.0.113.10",), (), None, zones)  # fmt: skip


def measure(book: ZoneBook, name: str, rtt: float) -> None:
    """The zone reached with exactly ``rtt`` (smoothing aside: the tests set what they compare)."""
    book.probed(SVC, name, rtt)
    book.get(SVC, name).rtt = rtt


def names(zones: list[ServingZone]) -> list[str]:
    return [z.zone for z in zones]


# -- ZoneBook --------------------------------------------------------------------------------------


def test_rtt_is_smoothed_with_the_newest_probe_weighing_a_third() -> None:
    book = ZoneBook()
    book.probed(SVC, "a", 0.010)
    assert book.get(SVC, "a").rtt == pytest.approx(0.010)  # the first probe is taken as it is
    book.probed(SVC, "a", 0.020)
    assert book.get(SVC, "a").rtt == pytest.approx(0.7 * 0.010 + 0.3 * 0.020)
    assert RTT_SMOOTHING == 0.3
    book.probed(SVC, "a", None, "refused")  # a failed round does not touch the average
    assert book.get(SVC, "a").rtt == pytest.approx(0.013)
    health = book.get(SVC, "a")
    assert (health.reachable, health.probed, health.last_error) == (False, True, "refused")


def test_a_zone_is_ejected_after_eject_after_probe_failures_in_a_row_and_probed_back() -> None:
    book = ZoneBook(eject_after=3)
    book.probed(SVC, "a", 0.01)
    for _ in range(2):
        book.probed(SVC, "a", None, "timeout")
    assert not book.get(SVC, "a").ejected
    book.probed(SVC, "a", None, "timeout")
    health = book.get(SVC, "a")
    assert health.ejected
    assert (health.failures, health.ejections) == (3, 1)
    book.probed(SVC, "a", None, "timeout")  # still down: the same ejection
    assert book.get(SVC, "a").ejections == 1
    book.probed(SVC, "a", 0.02)  # probed back
    health = book.get(SVC, "a")
    assert (health.ejected, health.failures, health.reachable) == (False, 0, True)
    for _ in range(3):
        book.probed(SVC, "a", None, "timeout")
    assert book.get(SVC, "a").ejections == 2


def test_a_successful_probe_breaks_a_run_of_failures() -> None:
    book = ZoneBook(eject_after=3)
    for outcome in (None, None, 0.01, None, None):
        book.probed(SVC, "a", outcome)
    assert not book.get(SVC, "a").ejected
    assert book.get(SVC, "a").failures == 2


def test_request_failures_eject_and_request_successes_reset_the_count() -> None:
    book = ZoneBook(eject_after=3)
    book.probed(SVC, "a", 0.01)
    book.request_failed(SVC, "a")
    book.request_failed(SVC, "a")
    book.request_succeeded(SVC, "a")
    assert book.get(SVC, "a").failures == 0
    book.request_failed(SVC, "a")
    book.probed(SVC, "a", None)  # probes and requests count in the same run
    assert not book.get(SVC, "a").ejected
    book.request_failed(SVC, "a")
    assert book.get(SVC, "a").ejected
    book.request_succeeded(SVC, "a")  # a late success (begun before) does not bring it back
    assert book.get(SVC, "a").ejected
    book.probed(SVC, "a", 0.01)  # only a probe does
    assert not book.get(SVC, "a").ejected


def test_a_request_success_for_a_zone_never_seen_records_nothing() -> None:
    book = ZoneBook()
    book.request_succeeded(SVC, "a")
    assert book.zones == {}


def test_zones_no_longer_probed_are_forgotten() -> None:
    book = ZoneBook()
    book.probed(SVC, "a", 0.01)
    book.probed(SVC, "b", 0.01)
    book.probed("api", "a", 0.01)
    book.forget({(SVC, "a")})
    assert set(book.zones) == {(SVC, "a")}


# -- ZoneChooser.order ---------------------------------------------------------------------------


def test_the_lowest_priority_serves_first_however_far() -> None:
    book = ZoneBook()
    chooser = ZoneChooser(book)
    measure(book, "near", 0.001)
    measure(book, "far", 0.200)
    gs = service(zone("near", priority=1), zone("far", priority=0))
    assert names(chooser.order(gs)) == ["far", "near"]


def test_within_a_priority_the_nearest_by_rtt_serves_first() -> None:
    book = ZoneBook()
    measure(book, "a", 0.080)
    measure(book, "b", 0.010)
    measure(book, "c", 0.040)
    gs = service(zone("a"), zone("b"), zone("c"))
    assert names(ZoneChooser(book).order(gs)) == ["b", "c", "a"]


@pytest.mark.parametrize(
    ("rtt_a", "rtt_b", "expected"),
    [
        (0.050, 0.046, ["a", "b"]),  # 4 ms apart: within 10 % of 46 ms, a near tie: the service's order
        (0.050, 0.044, ["b", "a"]),  # 6 ms apart: more than 10 %: b is nearer
        (0.0030, 0.0015, ["a", "b"]),  # 1.5 ms apart: within `tie` (2 ms), however large the ratio
        (0.0040, 0.0015, ["b", "a"]),  # 2.5 ms apart: beyond both
    ],
)
def test_near_ties_fall_back_to_the_global_services_order(
    rtt_a: float, rtt_b: float, expected: list[str]
) -> None:
    book = ZoneBook()
    measure(book, "a", rtt_a)
    measure(book, "b", rtt_b)
    gs = service(zone("a", distance=900), zone("b", distance=10))
    assert names(ZoneChooser(book, tie=0.002).order(gs)) == expected


def test_unmeasured_zones_come_after_measured_ones_by_distance() -> None:
    book = ZoneBook()
    measure(book, "measured-far", 0.150)
    book.probed(SVC, "down", None, "refused")  # probed, not reached: as good as unmeasured
    gs = service(
        zone("unknown"), zone("down", distance=100), zone("near", distance=50), zone("measured-far", distance=8000),
        zone("mid", distance=400),
    )  # fmt: skip
    assert names(ZoneChooser(book).order(gs)) == ["measured-far", "near", "down", "mid", "unknown"]


def test_zones_that_cannot_serve_are_left_out() -> None:
    book = ZoneBook(eject_after=1)
    for name in ("ok", "none-healthy", "no-ingress", "ejected"):
        measure(book, name, 0.01)
    book.request_failed(SVC, "ejected")
    gs = service(
        zone("ok"), zone("none-healthy", healthy=0), zone("no-ingress", endpoints=0), zone("ejected")
    )
    assert names(ZoneChooser(book).order(gs)) == ["ok"]
    assert ZoneChooser(book).order(service(zone("none-healthy", healthy=0))) == []


def test_the_leader_keeps_its_place_until_another_is_faster_by_more_than_the_hysteresis() -> None:
    book = ZoneBook()
    chooser = ZoneChooser(book, hysteresis=0.2)
    gs = service(zone("a"), zone("b"))
    measure(book, "a", 0.100)
    measure(book, "b", 0.120)
    assert names(chooser.order(gs)) == ["a", "b"]
    measure(book, "b", 0.085)  # 15 % faster: ranked first on RTT alone, not enough to switch
    assert names(chooser.order(gs)) == ["a", "b"]
    assert names(ZoneChooser(book).order(gs)) == ["b", "a"]  # (a chooser with no leader yet)
    measure(book, "b", 0.075)  # 25 % faster: switch
    assert names(chooser.order(gs)) == ["b", "a"]
    measure(book, "a", 0.070)  # a is back in front on RTT, by 7 %: b keeps the lead
    assert names(chooser.order(gs)) == ["b", "a"]
    measure(book, "a", 0.055)  # by 27 %: a leads again
    assert names(chooser.order(gs)) == ["a", "b"]


def test_hysteresis_never_holds_a_leader_that_cannot_serve_or_another_priority() -> None:
    book = ZoneBook(eject_after=1)
    chooser = ZoneChooser(book, hysteresis=0.5)
    gs = service(zone("a"), zone("b"))
    measure(book, "a", 0.010)
    measure(book, "b", 0.012)
    assert names(chooser.order(gs))[0] == "a"
    book.probed(SVC, "a", None, "timeout")  # ejected
    assert names(chooser.order(gs)) == ["b"]
    measure(book, "a", 0.010)  # probed back: b leads now and a is not faster by half
    assert names(chooser.order(gs)) == ["b", "a"]
    # the leader is demoted to a lower priority by the configuration: priorities win
    assert names(chooser.order(service(zone("a"), zone("b", priority=1)))) == ["a", "b"]


def test_hysteresis_is_kept_per_service() -> None:
    book = ZoneBook()
    chooser = ZoneChooser(book, hysteresis=0.2)
    measure(book, "a", 0.100)
    measure(book, "b", 0.120)
    web = service(zone("a"), zone("b"))
    chooser.order(web)
    measure(book, "b", 0.085)
    api = GlobalService("api", "api", "spiffe://mesh.example/svc/api", (), (), (), None, web.zones)
    book.probed("api", "a", 0.100)  # the same zones, measured the same for api
    book.probed("api", "b", 0.085)
    assert names(chooser.order(web)) == ["a", "b"]  # web's leader holds
    assert names(chooser.order(api)) == ["b", "a"]  # api has none yet


# -- weights ----------------------------------------------------------------------------------------


def test_without_weights_the_ranked_order_is_kept() -> None:
    ranked = [zone("a"), zone("b"), zone("c", priority=1)]
    assert pick_first(ranked, random.Random(1)) == ranked
    assert pick_first([], random.Random(1)) == []
    single = [zone("a", weight=5), zone("b", priority=1, weight=5)]  # one weighted zone in the top priority
    assert pick_first(single, random.Random(1)) == single


def test_weights_spread_the_first_zone_among_the_top_priority() -> None:
    ranked = [zone("a", weight=1), zone("b", weight=3), zone("c", weight=6), zone("d", priority=1, weight=90)]
    rng = random.Random(20260301)
    draws = 6000
    firsts: Counter[str] = Counter()
    for _ in range(draws):
        order = pick_first(ranked, rng)
        firsts[order[0].zone] += 1
        assert sorted(names(order)) == ["a", "b", "c", "d"]
        assert order[-1].zone == "d"  # the next priority stays behind
        rest = [z for z in ranked if z is not order[0]]
        assert order[1:] == rest  # the others in their ranked order
    assert firsts["d"] == 0
    for name, weight in (("a", 1), ("b", 3), ("c", 6)):
        assert firsts[name] / draws == pytest.approx(weight / 10, abs=0.03)


# -- properties --------------------------------------------------------------------------------------

ZONE_NAMES = ["a", "b", "c", "d", "e", "f"]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[GlobalService, list[dict[str, float | None]], set[str]]:
    count = draw(st.integers(1, len(ZONE_NAMES)))
    zones = tuple(
        zone(
            name,
            priority=draw(st.integers(0, 2)),
            weight=draw(st.none() | st.integers(1, 5)),
            distance=draw(st.none() | st.floats(0, 20000)),
            healthy=draw(st.integers(0, 2)),
            endpoints=draw(st.integers(0, 2)),
        )
        for name in ZONE_NAMES[:count]
    )
    rtts = st.none() | st.floats(0.0001, 0.5)
    rounds = draw(st.lists(st.fixed_dictionaries({z.zone: rtts for z in zones}), min_size=1, max_size=6))
    ejected = draw(st.sets(st.sampled_from([z.zone for z in zones])))
    return service(*zones), rounds, ejected


@settings(max_examples=200, deadline=None)
@given(scenarios(), st.floats(0, 0.9), st.floats(0, 0.01), st.integers(0, 2**32))
def test_order_is_a_permutation_of_the_usable_zones_with_priorities_never_inverted(
    scenario: tuple[GlobalService, list[dict[str, float | None]], set[str]],
    hysteresis: float, tie: float, seed: int,
) -> None:  # fmt: skip
    gs, rounds, ejected = scenario
    book = ZoneBook(eject_after=1)
    chooser = ZoneChooser(book, hysteresis=hysteresis, tie=tie)
    rng = random.Random(seed)
    for measured in rounds:
        for name, rtt in measured.items():
            book.probed(SVC, name, rtt)
            if name in ejected:
                book.request_failed(SVC, name)
        ranked = chooser.order(gs)
        usable = {
            z.zone for z in gs.zones if z.healthy > 0 and z.endpoints and not book.get(SVC, z.zone).ejected
        }
        assert sorted(names(ranked)) == sorted(usable)
        priorities = [z.priority for z in ranked]
        assert priorities == sorted(priorities)
        # measured zones before unmeasured ones, within each priority
        for first, second in itertools.pairwise(ranked):
            if first.priority == second.priority and book.get(SVC, second.zone).reachable:
                assert book.get(SVC, first.zone).reachable
        picked = pick_first(ranked, rng)
        assert sorted(names(picked)) == sorted(names(ranked))
        if picked:
            assert picked[0].priority == ranked[0].priority
            assert [z.priority for z in picked] == priorities


@settings(deadline=None, max_examples=200)
@given(st.lists(st.floats(min_value=0.001, max_value=0.2), min_size=2, max_size=6))
def test_a_near_tie_never_puts_first_a_zone_slower_than_the_tie_allows(rtts: list[float]) -> None:
    """Near-ties are grouped from the fastest zone: a chain of small gaps cannot carry the
    GlobalService's first choice past ``tie`` (or 10 %) of the fastest zone."""
    zones = [zone(f"z{i}") for i in range(len(rtts))]
    book = ZoneBook()
    for z, rtt in zip(zones, rtts, strict=True):
        measure(book, z.zone, rtt)
    chooser = ZoneChooser(book, tie=0.002)
    first = chooser.order(service(*zones))[0]
    fastest = min(rtts)
    assert rtts[int(first.zone[1:])] <= fastest + max(0.002, 0.1 * fastest) + 1e-12


def test_a_chain_of_near_ties_does_not_drift_to_a_slow_zone() -> None:
    """12.7, 11.8, 10.9 and 10.0 ms, each within 10 % of the next: listed slowest first, the
    first choice must still be within 10 % of the fastest (10.9 or 10.0 ms), in listed order."""
    zones = [zone(n) for n in ("a", "b", "c", "d")]
    book = ZoneBook()
    for z, rtt in zip(zones, (0.0127, 0.0118, 0.0109, 0.0100), strict=True):
        measure(book, z.zone, rtt)
    assert names(ZoneChooser(book, tie=0.0005).order(service(*zones))) == ["c", "d", "a", "b"]
