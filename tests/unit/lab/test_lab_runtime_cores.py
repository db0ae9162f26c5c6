"""The runner's cores without I/O: docker's healthcheck state machine on an injected clock,
restart policies and their backoff, and where a node's mounts go."""

from __future__ import annotations

from meshgate.lab.health import HealthMonitor
from meshgate.lab.model import Healthcheck
from meshgate.lab.mounts import MountTable, ordered, prepare, submounts
from meshgate.lab.restart import Backoff, should_restart

CHECK = Healthcheck(argv=("true",), display="true", interval=2.0, timeout=1.0, start_period=5.0, retries=3)


def test_failures_in_the_start_period_do_not_count() -> None:
    monitor = HealthMonitor(CHECK, started=100.0)
    assert monitor.next_probe() == 100.5  # the start interval
    for now in (100.5, 101.0, 104.0):
        assert monitor.record(False, "refused", now) == "starting"
    assert monitor.failing_streak == 0
    assert monitor.next_probe() == 104.5
    monitor.record(False, "refused", 105.0)
    monitor.record(False, "refused", 107.0)
    assert monitor.status == "starting"
    assert monitor.next_probe() == 109.0
    assert monitor.record(False, "refused\n", 109.0) == "unhealthy"
    assert monitor.last_output == "refused\n"
    assert monitor.record(True, "", 111.0) == "healthy"
    assert monitor.failing_streak == 0


def test_a_success_ends_the_start_period() -> None:
    monitor = HealthMonitor(CHECK, started=0.0)
    assert monitor.record(True, "", 1.0) == "healthy"
    monitor.record(False, "", 2.0)
    monitor.record(False, "", 3.0)
    assert monitor.record(False, "", 4.0) == "unhealthy"  # counted although within 5 s of start


def test_restart_and_configure_reset_the_count() -> None:
    monitor = HealthMonitor(CHECK, started=0.0)
    for now in (6.0, 8.0):
        monitor.record(False, "", now)
    monitor.count_from_here()
    assert monitor.failing_streak == 0
    assert monitor.status == "starting"
    monitor.record(False, "", 10.0)
    monitor.restart(20.0)
    assert monitor.status == "starting"
    assert monitor.in_start_period(24.0)
    assert monitor.next_probe() == 20.5


def test_restart_policies() -> None:
    assert should_restart("always", 0)
    assert should_restart("unless-stopped", 0)
    assert should_restart("on-failure", 1)
    assert not should_restart("on-failure", 0)
    assert not should_restart("no", 1)
    assert not should_restart("always", 137, stopped_by_user=True)


def test_backoff_doubles_up_to_a_minute_and_resets_after_a_stable_run() -> None:
    backoff = Backoff()
    delays = [backoff.next_delay(ran_for=0.5) for _ in range(12)]
    assert delays[:4] == [0.1, 0.2, 0.4, 0.8]
    assert max(delays) == 60.0
    assert backoff.next_delay(ran_for=30.0) == 0.1


def fake_exists(*paths: str) -> object:
    present = {"/", *paths}
    return lambda path: path in present


def test_a_missing_top_level_target_is_created_in_the_private_root() -> None:
    table = MountTable()
    table.add("/etc", private=False)
    result = prepare("/lab/config", is_dir=True, exists=fake_exists("/etc"), table=table)  # type: ignore[arg-type]
    assert result.overlay is None
    assert result.create == ("/lab", "/lab/config")
    assert not result.last_is_file


def test_a_missing_target_below_a_host_directory_gets_an_overlay() -> None:
    table = MountTable()
    table.add("/etc", private=False)
    table.add("/run", private=True)
    exists = fake_exists("/etc", "/run")
    result = prepare("/etc/meshgate/app.yaml", is_dir=False, exists=exists, table=table)  # type: ignore[arg-type]
    assert result.overlay == "/etc"
    assert result.create == ("/etc/meshgate", "/etc/meshgate/app.yaml")
    assert result.last_is_file
    in_run = prepare("/run/bird/bird.ctl", is_dir=False, exists=exists, table=table)  # type: ignore[arg-type]
    assert in_run.overlay is None
    assert prepare("/etc", is_dir=True, exists=exists, table=table).create == ()  # type: ignore[arg-type]


def test_mount_order_and_submounts() -> None:
    assert ordered(["/a/b/c", "/z", "/a", "/a/b"]) == ["/a", "/z", "/a/b", "/a/b/c"]
    assert submounts(["/var", "/var/lib/x", "/var/lib/x/y", "/var/log", "/varnish"], "/var") == [
        "/var/log",
        "/var/lib/x",
    ]


def test_installations_below_a_nodes_private_mounts_are_bound_into_it() -> None:
    from meshgate.lab.mounts import hidden_in_node

    paths = ["/tmp/venv", "/tmp/venv/lib/python3.11/site-packages", "/usr", "/run/x/src", "/tmpfoo/a", ""]
    assert hidden_in_node(paths) == ["/tmp/venv", "/run/x/src"]
