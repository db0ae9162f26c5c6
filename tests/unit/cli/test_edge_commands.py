"""``meshgate edge``: what drain and undrain change in an Edge's spec, and ``run`` handing its
options to the edge process (a stand-in module here; the real one is tested with processes)."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from meshgate.cli.edge_commands import drain_spec, undrain_spec
from meshgate.cli.main import cli

T0, T1 = "2026-01-31T12:00:00Z", "2026-01-31T12:05:00Z"


def bgp() -> dict[str, Any]:
    return {
        "localASN": 65001,
        "routerID": "10.0.0.1",
        "neighbors": [{"address": "10.0.0.254", "peerASN": 65000}],
    }


def test_a_drain_records_why_when_and_how() -> None:
    spec = {"zone": "eu", "bgp": bgp()}
    assert drain_spec(spec, "kernel upgrade", ("as-path-prepend", "graceful-shutdown"), T0) == (
        True, f"drain requested at {T0} (signals: as-path-prepend, graceful-shutdown; reason: kernel upgrade)",
    )  # fmt: skip
    assert spec["drain"] == {
        "reason": "kernel upgrade", "requestedAt": T0, "signals": ["as-path-prepend", "graceful-shutdown"],
    }  # fmt: skip
    plain = {"zone": "eu", "bgp": bgp()}
    drain_spec(plain, None, (), T0)
    assert plain["drain"] == {"reason": "", "requestedAt": T0, "signals": ["graceful-shutdown"]}


def test_draining_again_keeps_when_it_was_first_asked_for() -> None:
    spec = {
        "zone": "eu",
        "bgp": bgp(),
        "drain": {"reason": "r", "requestedAt": T0, "signals": ["as-path-prepend"]},
    }
    assert drain_spec(spec, None, (), T1) == (
        False, f"already draining since {T0} (signals: as-path-prepend; reason: r)",
    )  # fmt: skip
    assert drain_spec(spec, "other", ("graceful-shutdown",), T1) == (
        True, f"already draining since {T0}; now signals: graceful-shutdown; reason: other",
    )  # fmt: skip
    assert spec["drain"] == {"reason": "other", "requestedAt": T0, "signals": ["graceful-shutdown"]}
    # A drain written by hand without a time gets one.
    bare = {"zone": "eu", "bgp": bgp(), "drain": {"signals": ["graceful-shutdown"]}}
    assert drain_spec(bare, None, (), T1)[0] is True
    assert bare["drain"]["requestedAt"] == T1


def test_undrain_removes_the_drain_and_only_says_so_when_there_was_one() -> None:
    spec = {
        "zone": "eu",
        "bgp": bgp(),
        "drain": {"reason": "", "requestedAt": T0, "signals": ["graceful-shutdown"]},
    }
    assert undrain_spec(spec) == (True, f"drain cancelled (requested at {T0})")
    assert "drain" not in spec
    assert undrain_spec(spec) == (False, "not draining")


def test_edge_run_hands_every_option_to_the_edge_process(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[dict[str, Any]] = []

    def main(**kwargs: Any) -> int:
        calls.append(kwargs)
        return 5

    monkeypatch.setitem(sys.modules, "edge.process", types.SimpleNamespace(main=main))
    config = tmp_path / "edge.yaml"
    config.write_text("name: edge-1\n")
    result = CliRunner().invoke(cli, [
        "edge", "run", "--zone-cp", "tls://127.0.0.1:5682", "--token-file", str(tmp_path / "token"),
        "--data-dir", str(tmp_path / "data"), "--config", str(config), "--cert-ttl", "60", "--log-level", "debug",
    ])  # fmt: skip
    assert result.exit_code == 5, result.output
    assert calls == [{
        "zone_cp_url": "tls://127.0.0.1:5682", "token_file": tmp_path / "token", "data_dir": tmp_path / "data",
        "config_file": config, "cert_ttl": 60.0, "log_level": "debug",
    }]  # fmt: skip
    minimal = CliRunner().invoke(cli, ["edge", "run", "--zone-cp", "tls://h:1", "--data-dir", str(tmp_path)])
    assert minimal.exit_code == 5
    assert calls[1] == {"zone_cp_url": "tls://h:1", "token_file": None, "data_dir": tmp_path, "config_file": None,
                        "cert_ttl": None, "log_level": "info"}  # fmt: skip
    missing = CliRunner().invoke(cli, ["edge", "run", "--data-dir", str(tmp_path)])
    assert missing.exit_code == 2
    assert "--zone-cp" in missing.output


def test_the_edge_command_loads_none_of_the_control_plane_stack() -> None:
    """``meshgate edge run`` on an edge node: the CLI around it stays as lean as the process."""
    heavy = ("aiohttp", "pydantic", "prometheus_client", "rich", "yaml", "global_cp", "zone_cp")
    code = (
        "import json, sys, meshgate.cli.main, meshgate.cli.edge_commands; "
        f"print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(done.stdout) == []
