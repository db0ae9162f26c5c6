"""The proxy process stays lean: its modules do not pull in the control plane's web framework,
validation stack or metrics library (its idle memory is measured in bench/)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("aiohttp", "pydantic", "prometheus_client", "rich", "yaml", "global_cp", "zone_cp")


def test_the_proxy_process_imports_none_of_the_control_plane_stack() -> None:
    code = (
        "import json, sys, zones.process, zones.local, zones.ingress; "
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(done.stdout) == []
    # The check would notice: the zone CP does import them.
    code = code.replace("zones.process, zones.local, zones.ingress", "zone_cp.server")
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert "aiohttp" in json.loads(done.stdout)
