from __future__ import annotations

from datetime import UTC, datetime

from meshgate.cli.output import age, table
from meshgate.resources.kinds import REGISTRY
from tests.support.factories import doc


def test_table_has_one_row_per_resource_and_never_truncates() -> None:
    gs = doc(
        "GlobalService",
        "web",
        {
            "service": "web",
            "vips": ["203.0.113.10", "2001:db8::10"],
            "hostnames": ["a" * 60 + ".example.com"],
            "ports": [
                {"name": "h", "port": 80, "protocol": "http"},
                {"name": "t", "port": 443, "protocol": "tls-passthrough"},
            ],
        },
    )
    lines = table(REGISTRY["GlobalService"], [gs]).splitlines()
    assert lines[0].split() == ["NAME", "SERVICE", "VIPS", "PORTS", "HOSTNAMES", "AGE"]
    assert lines[1].split() == [
        "web",
        "web",
        "203.0.113.10,2001:db8::10",
        "80/http,443/tls-passthrough",
        "a" * 60 + ".example.com",
    ]


def test_edge_status_columns_summarise_sessions_and_announcements() -> None:
    status = doc(
        "EdgeStatus",
        "edge-1",
        {
            "zone": "eu",
            "sessions": [
                {"neighbor": "10.0.0.1", "state": "established"},
                {"neighbor": "10.0.0.2", "state": "idle"},
            ],
            "announcements": [
                {"vip": "203.0.113.10", "state": "announced"},
                {"vip": "203.0.113.11", "state": "withdrawn"},
            ],
        },
    )
    draining = doc("EdgeStatus", "edge-2", {"zone": "eu", "drain": {"phase": "signalled"}})
    lines = table(REGISTRY["EdgeStatus"], [status, draining]).splitlines()
    assert lines[0].split() == ["NAME", "ZONE", "SESSIONS", "UP", "ANNOUNCED", "DRAIN", "AGE"]
    assert lines[1].split() == ["edge-1", "eu", "1/2", "203.0.113.10", "-"]
    assert lines[2].split() == ["edge-2", "eu", "0/0", "signalled"]  # nothing announced: empty cell


def test_age() -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert age("2026-01-02T03:04:00Z", now) == "5s"
    assert age("2026-01-02T02:00:00Z", now) == "1h"
    assert age("2025-12-30T03:04:05Z", now) == "3d"
    assert age(None, now) == ""
