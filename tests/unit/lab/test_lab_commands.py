"""``meshgate lab``: what needs no root (an invalid topology is refused with every violation,
commands on a lab that is not running)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from meshgate.cli.main import cli


def test_up_refuses_an_invalid_topology_with_every_violation(tmp_path: Path) -> None:
    (tmp_path / "topology.clab.yml").write_text(
        "name: x\ntopology:\n  nodes:\n    a: {kind: nokia_srlinux}\n    b: {kind: linux, binds: [nowhere:/x]}\n"
    )
    done = CliRunner().invoke(cli, ["lab", "up", str(tmp_path)])
    assert done.exit_code == 3
    assert "topology.nodes.a.kind: kind 'nokia_srlinux' is not supported" in done.output
    assert (
        f"topology.nodes.b.binds[0]: host path {tmp_path}/nowhere does not exist (for node b)" in done.output
    )


def test_commands_on_a_lab_that_is_not_running(tmp_path: Path) -> None:
    (tmp_path / "topology.clab.yml").write_text("name: idle\ntopology:\n  nodes:\n    a: {kind: linux}\n")
    runner = CliRunner()
    status = runner.invoke(cli, ["lab", "status", str(tmp_path)])
    assert status.exit_code == 7
    assert "no lab is running" in status.output
    exec_ = runner.invoke(cli, ["lab", "exec", str(tmp_path), "a", "--", "true"])
    assert exec_.exit_code == 7
    down = runner.invoke(cli, ["lab", "down", str(tmp_path)])
    assert down.exit_code == 0
    assert "nothing to do" in down.output
