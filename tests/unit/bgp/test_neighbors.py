"""The neighbor table folds ExaBGP's events into session states (never up before ExaBGP says
so), counts flaps, and renders Prometheus lines."""

from __future__ import annotations

from bgp.events import NeighborChange, NeighborState, Notification
from bgp.neighbors import NeighborTable, metric_lines
from bgp.settings import Neighbor

NEIGHBORS = (Neighbor("192.0.2.1", 65001), Neighbor("2001:db8::1", 65002))


def change(peer: str, state: NeighborState, reason: str = "") -> NeighborChange:
    return NeighborChange(
        peer=peer, local="", peer_asn=65001, local_asn=65000, state=state, reason=reason, time=0.0
    )


def test_a_session_is_established_only_once_exabgp_says_up() -> None:
    table = NeighborTable(NEIGHBORS, now=10.0)
    first = table.get("192.0.2.1")
    assert first is not None
    assert (first.state, first.since, first.reason) == ("idle", 10.0, "not started")
    assert table.apply(change("192.0.2.1", "connected"), 11.0) is True
    assert (first.state, first.reason) == ("connect", "connecting")
    assert table.established() == []
    assert table.apply(change("192.0.2.1", "up"), 12.0) is True
    assert table.established() == ["192.0.2.1"]
    assert (first.state, first.since, first.reason, first.flaps) == ("established", 12.0, "", 0)


def test_flaps_and_the_reason_kept_while_it_retries() -> None:
    table = NeighborTable(NEIGHBORS, now=0.0)
    table.apply(change("192.0.2.1", "up"), 1.0)
    table.apply(change("192.0.2.1", "down", "notification received (6,2)"), 2.0)
    status = table.get("192.0.2.1")
    assert status is not None
    assert (status.state, status.flaps, status.since) == ("down", 1, 2.0)
    assert table.apply(change("192.0.2.1", "connected"), 3.0) is True
    assert (status.state, status.reason) == ("connect", "notification received (6,2)")
    table.apply(change("192.0.2.1", "down", "closing connection"), 4.0)
    assert status.reason == "closing connection"
    assert status.flaps == 1  # connect -> down is no flap
    table.apply(change("192.0.2.1", "up"), 5.0)
    table.apply(change("192.0.2.1", "down", ""), 6.0)
    assert (status.flaps, status.reason) == (2, "down")


def test_repeated_state_is_no_change_and_unknown_peers_are_ignored() -> None:
    table = NeighborTable(NEIGHBORS, now=0.0)
    assert table.apply(change("192.0.2.1", "up"), 1.0) is True
    assert table.apply(change("192.0.2.1", "up"), 2.0) is False
    status = table.get("192.0.2.1")
    assert status is not None
    assert status.since == 1.0
    assert table.apply(change("198.51.100.1", "up"), 3.0) is False


def test_notifications_are_recorded_without_changing_state() -> None:
    table = NeighborTable(NEIGHBORS, now=0.0)
    table.apply(change("192.0.2.1", "up"), 1.0)
    notification = Notification("192.0.2.1", "receive", 6, 2, 'Shutdown Communication: "bye"', 2.0)
    assert table.apply(notification, 2.0) is False
    status = table.get("192.0.2.1")
    assert status is not None
    assert status.state == "established"
    assert status.last_notification == 'notification received (6,2) Shutdown Communication: "bye"'


def test_all_down_when_the_speaker_stops() -> None:
    table = NeighborTable(NEIGHBORS, now=0.0)
    table.apply(change("192.0.2.1", "up"), 1.0)
    assert table.all_down("speaker stopped", 5.0) is True
    assert [(n.state, n.reason, n.since) for n in table] == [
        ("down", "speaker stopped", 5.0),
        ("down", "speaker stopped", 5.0),
    ]
    assert table.get("192.0.2.1") is not None
    assert table.get("192.0.2.1").flaps == 1
    assert table.all_down("speaker stopped", 6.0) is False
    assert len(table) == 2


def test_metric_lines() -> None:
    table = NeighborTable(NEIGHBORS, now=0.0)
    table.apply(change("192.0.2.1", "up"), 1.0)
    table.apply(change("192.0.2.1", "down", "x"), 2.0)
    table.apply(change("192.0.2.1", "up"), 3.0)
    lines = metric_lines(table, speaker_up=True, restarts=2, announced_routes=3)
    samples = [line for line in lines if not line.startswith("#")]
    assert samples == [
        "meshgate_bgp_speaker_up 1",
        "meshgate_bgp_speaker_restarts_total 2",
        "meshgate_bgp_announced_routes 3",
        'meshgate_bgp_neighbor_up{neighbor="192.0.2.1",peer_asn="65001"} 1',
        'meshgate_bgp_neighbor_up{neighbor="2001:db8::1",peer_asn="65002"} 0',
        'meshgate_bgp_neighbor_flaps_total{neighbor="192.0.2.1",peer_asn="65001"} 1',
        'meshgate_bgp_neighbor_flaps_total{neighbor="2001:db8::1",peer_asn="65002"} 0',
    ]
    types = [line.split()[2:4] for line in lines if line.startswith("# TYPE")]
    assert types == [
        ["meshgate_bgp_speaker_up", "gauge"],
        ["meshgate_bgp_speaker_restarts_total", "counter"],
        ["meshgate_bgp_announced_routes", "gauge"],
        ["meshgate_bgp_neighbor_up", "gauge"],
        ["meshgate_bgp_neighbor_flaps_total", "counter"],
    ]
    assert all(line.count("# HELP") <= 1 for line in lines)
    down = metric_lines(NeighborTable((), 0.0), speaker_up=False, restarts=0, announced_routes=0)
    assert "meshgate_bgp_speaker_up 0" in down
