"""``meshgate demo --lab --once`` (root): labs/two-region up with BGP, its checks passing, down."""

from __future__ import annotations

import pytest

from meshgate.netns import list_namespaces
from tests.support.labs import meshgate
from tests.support.netns import require_root

pytestmark = [pytest.mark.root, pytest.mark.slow]


def test_demo_lab_brings_the_two_region_lab_up_checks_it_and_down() -> None:
    require_root()
    before = {name for name in list_namespaces() if name.startswith("clab-two-region-")}
    done = meshgate("demo", "--lab", "--once", timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "8 of 8 checks passed" in done.stdout
    assert "client-eu -- curl -si -H 'Host: web.two-region.lab' http://203.0.113.10/" in done.stdout
    assert "the lab is down" in done.stdout
    assert {name for name in list_namespaces() if name.startswith("clab-two-region-")} == before
