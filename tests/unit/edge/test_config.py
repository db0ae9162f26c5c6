"""An edge's own configuration file: defaults, every field, and every problem reported with its
path (the file is refused as a whole)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edge.config import (
    AnnounceConfig,
    BgpConfig,
    ChoiceConfig,
    DrainConfig,
    ListenOverride,
    ProbeConfig,
    RetryConfig,
    load,
    parse,
)
from zones.config import AccessLogConfig, ConfigError, HttpConfig

FULL: dict[str, Any] = {
    "name": "edge-a1",
    "admin": "127.0.0.1:9903",
    "listen": {"address": "127.0.0.1", "portOffset": 20000},
    "probe": {"interval": 0.5, "timeout": 1.5, "ejectAfter": 5},
    "announce": {"interval": 2, "rise": 3, "fall": 4, "staleness": 120},
    "drain": {"threshold": 10, "deadline": 45},
    "zoneChoice": {"hysteresis": 0.3, "tie": 0.005},
    "retry": {"attempts": 2, "budget": 0.5},
    "headers": False,
    "bgp": {"enabled": False, "exabgp": "/opt/exabgp/bin/exabgp"},
    "http": {
        "headerTimeout": 5, "requestTimeout": 60, "idleTimeout": 30, "upstreamTimeout": 8,
        "accessLog": {"path": "-", "sample": 0.01, "errors": False},
    },
}  # fmt: skip


def problems(raw: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(raw)
    return caught.value.problems


def test_only_the_name_is_required_and_everything_else_has_its_default() -> None:
    config = parse({"name": "edge-a1"})
    assert config.name == "edge-a1"
    assert config.admin is None
    assert config.listen is None  # bind on the VIPs themselves
    assert config.probe == ProbeConfig(interval=1.0, timeout=2.0, eject_after=3)
    assert config.announce == AnnounceConfig(interval=1.0, rise=2, fall=3, staleness=600.0)
    assert config.drain == DrainConfig(threshold=0, deadline=30.0)
    assert config.choice == ChoiceConfig(hysteresis=0.2, tie=0.002)
    assert config.retry == RetryConfig(attempts=3, budget=0.2)
    assert config.headers is True
    assert config.bgp == BgpConfig(enabled=True, exabgp="exabgp")
    assert config.http == HttpConfig()


def test_every_field_is_read() -> None:
    config = parse(FULL)
    assert config.admin == ("127.0.0.1", 9903)
    assert config.listen == ListenOverride("127.0.0.1", 20000)
    assert config.probe == ProbeConfig(0.5, 1.5, 5)
    assert config.announce == AnnounceConfig(2.0, 3, 4, 120.0)
    assert config.drain == DrainConfig(10, 45.0)
    assert config.choice == ChoiceConfig(0.3, 0.005)
    assert config.retry == RetryConfig(2, 0.5)
    assert config.headers is False
    assert config.bgp == BgpConfig(False, "/opt/exabgp/bin/exabgp")
    assert config.http == HttpConfig(5.0, 60.0, 30.0, 8.0, AccessLogConfig("-", 0.01, False))


def test_an_ipv6_admin_address_and_a_listen_override_without_offset_are_read() -> None:
    config = parse({"name": "e", "admin": "::1:9903", "listen": {"address": "::1"}})
    assert config.admin == ("::1", 9903)
    assert config.listen == ListenOverride("::1", 0)


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_load_reads_yaml_and_json_files(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"edge{suffix}"
    path.write_text(json.dumps(FULL))  # JSON is YAML too
    assert load(path) == parse(FULL)


def test_every_problem_is_reported_with_its_path() -> None:
    found = problems({
        "name": "Edge_A1",
        "admin": "localhost:http",
        "listen": {"address": "not-an-ip", "portOffset": 70000, "interface": "lo"},
        "probe": {"interval": 0, "timeout": "2s", "ejectAfter": 0},
        "announce": {"interval": -1, "rise": 0, "fall": True, "staleness": -5},
        "drain": {"threshold": -1, "deadline": "soon"},
        "zoneChoice": {"hysteresis": -0.1, "tie": None},
        "retry": {"attempts": 0, "budget": 1.5},
        "headers": "yes",
        "bgp": {"enabled": "yes", "exabgp": ""},
        "http": {"headerTimeout": 0, "accessLog": {"sample": 2}},
        "bogus": 1,
    })  # fmt: skip
    assert sorted(found) == sorted([
        "name: must be a DNS label (lowercase letters, digits, '-')",
        "admin: must be an IP address",
        "admin: must be a port number",
        "listen.interface: unknown field",
        "listen.address: must be an IP address",
        "listen.portOffset: must be an integer from 0 to 65534",
        "probe.interval: must be a number of at least 0.05",
        "probe.timeout: must be a number of at least 0.05",
        "probe.ejectAfter: must be a number of at least 1",
        "announce.interval: must be a number of at least 0.05",
        "announce.rise: must be a number of at least 1",
        "announce.fall: must be a number of at least 1",
        "announce.staleness: must be a number of at least 0.0",
        "drain.threshold: must be a number of at least 0",
        "drain.deadline: must be a number of at least 0.0",
        "zoneChoice.hysteresis: must be a number of at least 0.0",
        "zoneChoice.tie: must be a number of at least 0.0",
        "retry.attempts: must be a number of at least 1",
        "retry.budget: must be between 0 and 1",
        "headers: must be true or false",
        "bgp.enabled: must be true or false",
        "bgp.exabgp: must be a program name or path",
        "http.headerTimeout: must be a number of at least 0.1",
        "http.accessLog.sample: must be between 0 and 1",
        "bogus: unknown field",
    ])  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"name": "e", "listen": {"address": "127.0.0.1", "portOffset": -1}}, "listen.portOffset: must be an integer from 0 to 65534"),
        ({"name": "e", "listen": {"address": "127.0.0.1", "portOffset": 1.5}}, "listen.portOffset: must be an integer from 0 to 65534"),
        ({"name": "e", "listen": {"address": "127.0.0.1", "portOffset": True}}, "listen.portOffset: must be an integer from 0 to 65534"),
        ({"name": "e", "listen": {"portOffset": 10}}, "listen.address: must be an IP address"),
        ({"name": "e", "probe": None}, "probe: must be a mapping"),
        ({"name": "e", "probe": {"ejectAfter": 2.5}}, "probe.ejectAfter: must be a whole number"),
        ({"name": "e", "announce": {"rise": 1.5}}, "announce.rise: must be a whole number"),
        ({"name": "e", "retry": {"attempts": 2.5}}, "retry.attempts: must be a whole number"),
        ({"name": "e", "drain": {"threshold": 0.5}}, "drain.threshold: must be a whole number"),
        ({"name": "e", "retry": {"budget": -0.1}}, "retry.budget: must be a number of at least 0.0"),
        ({"name": "e", "zoneChoice": {"hysteresis": 1.0}}, "zoneChoice.hysteresis: must be a fraction below 1"),
        ({"name": "e", "bgp": {"exabgp": 3}}, "bgp.exabgp: must be a program name or path"),
        ({"name": "e", "bgp": {"routerID": "1.2.3.4"}}, "bgp.routerID: unknown field"),
        ({"name": "e", "admin": "127.0.0.1:99999"}, "admin: must be a port number"),
        ({"name": "e", "headers": None}, "headers: must be true or false"),
        ({}, "name: must be a DNS label (lowercase letters, digits, '-')"),
    ],
)  # fmt: skip
def test_one_bad_field_is_refused_with_its_path(raw: dict[str, Any], expected: str) -> None:
    assert problems(raw) == [expected]


def test_the_boundaries_are_accepted() -> None:
    config = parse({
        "name": "e", "listen": {"address": "0.0.0.0", "portOffset": 65534},
        "retry": {"attempts": 1, "budget": 0}, "probe": {"interval": 0.05, "ejectAfter": 1},
        "zoneChoice": {"hysteresis": 0, "tie": 0}, "announce": {"staleness": 0}, "drain": {"deadline": 0},
    })  # fmt: skip
    assert config.listen == ListenOverride("0.0.0.0", 65534)
    assert config.retry == RetryConfig(1, 0.0)
    assert parse({"name": "e", "retry": {"budget": 1}}).retry.budget == 1.0
    assert parse({"name": "e", "probe": {"ejectAfter": 4.0}}).probe.eject_after == 4  # 4.0 is whole


def test_a_section_that_is_not_a_mapping_is_refused() -> None:
    assert problems({"name": "e", "listen": "127.0.0.1"}) == [
        "listen: must be a mapping",
        "listen.address: must be an IP address",  # it has none, then
    ]


def test_a_document_that_is_not_a_mapping_is_refused() -> None:
    assert "name: must be a DNS label (lowercase letters, digits, '-')" in problems(["name", "e"])
