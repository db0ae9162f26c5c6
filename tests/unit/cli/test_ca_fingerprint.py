"""``--ca-fingerprint`` (env ``MESHGATE_CA_FINGERPRINT``) of ``zone-cp run``, ``proxy run`` and
``edge run``: a join token naming another CA is refused before anything starts (exit 5, nothing
written); a matching one goes through to the process (a stand-in module here)."""

from __future__ import annotations

import sys
import types
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from meshgate.cli.main import cli
from meshgate.pki.join_tokens import JoinTokenClaims, key_id, new_signing_key, sign

CA = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32
KEY = new_signing_key()


def token_file(directory: Path, role: str, ca: str = CA) -> Path:
    claims = JoinTokenClaims.new(
        role=role, zone="eu-west", now=datetime.now(UTC), ttl=timedelta(hours=1), ca_fingerprint=ca,
        key_id=key_id(KEY.public_key()),
    )  # fmt: skip
    path = directory / f"{role}-token"
    path.write_text(sign(claims, KEY) + "\n")
    return path


def command(which: str, tmp_path: Path, token: Path) -> list[str]:
    data = ["--data-dir", str(tmp_path / "data"), "--token-file", str(token)]
    if which == "zone-cp":
        return ["zone-cp", "run", "--zone", "eu-west", "--global", "https://127.0.0.1:1", *data]
    config = tmp_path / "config.yaml"
    if which == "edge":
        config.write_text("name: edge-1\n")
        return ["edge", "run", "--zone-cp", "tls://127.0.0.1:1", "--config", str(config), *data]
    config.write_text("name: ingress-1\nlisten: {address: 127.0.0.1, port: 0}\n")
    return [
        "proxy",
        "run",
        "--role",
        "ingress",
        "--zone-cp",
        "tls://127.0.0.1:1",
        "--config",
        str(config),
        *data,
    ]


ROLES = {"zone-cp": "zone", "edge": "edge", "proxy": "ingress"}


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Stand-ins for the three processes: each records that it was started and exits 0."""
    calls: list[str] = []

    def process(name: str) -> Any:
        return lambda **_kwargs: calls.append(name) or 0

    async def zone_cp(_config: object) -> int:
        calls.append("zone-cp")
        return 0

    monkeypatch.setitem(sys.modules, "edge.process", types.SimpleNamespace(main=process("edge")))
    monkeypatch.setitem(sys.modules, "zones.process", types.SimpleNamespace(main=process("proxy")))
    monkeypatch.setitem(sys.modules, "zone_cp.server", types.SimpleNamespace(run=zone_cp))
    return calls


@pytest.mark.parametrize("which", sorted(ROLES))
def test_a_token_naming_another_ca_is_refused_before_anything_starts(
    which: str, tmp_path: Path, started: list[str]
) -> None:
    token = token_file(tmp_path, ROLES[which], ca=OTHER)
    result = CliRunner().invoke(cli, [*command(which, tmp_path, token), "--ca-fingerprint", CA])
    assert result.exit_code == 5, result.output
    assert f"names the CA {OTHER}, but --ca-fingerprint is {CA}" in result.output
    assert started == []
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("which", sorted(ROLES))
def test_a_matching_token_goes_through(which: str, tmp_path: Path, started: list[str]) -> None:
    token = token_file(tmp_path, ROLES[which])
    result = CliRunner().invoke(
        cli, [*command(which, tmp_path, token), "--ca-fingerprint", CA.upper()[:6] + CA[6:]]
    )
    assert result.exit_code == 0, result.output
    assert started == [which]


@pytest.mark.parametrize("which", sorted(ROLES))
def test_the_environment_gives_the_fingerprint_too(which: str, tmp_path: Path, started: list[str]) -> None:
    token = token_file(tmp_path, ROLES[which], ca=OTHER)
    refused = CliRunner().invoke(cli, command(which, tmp_path, token), env={"MESHGATE_CA_FINGERPRINT": CA})
    assert refused.exit_code == 5, refused.output
    empty = CliRunner().invoke(cli, command(which, tmp_path, token), env={"MESHGATE_CA_FINGERPRINT": ""})
    assert empty.exit_code == 0, empty.output  # empty: not given
    assert started == [which]


def test_without_the_option_any_token_goes_through(tmp_path: Path, started: list[str]) -> None:
    token = token_file(tmp_path, "edge", ca=OTHER)
    result = CliRunner().invoke(cli, command("edge", tmp_path, token), env={"MESHGATE_CA_FINGERPRINT": None})
    assert result.exit_code == 0, result.output
    assert started == ["edge"]


def test_a_malformed_fingerprint_is_a_usage_error_naming_the_option(
    tmp_path: Path, started: list[str]
) -> None:
    token = token_file(tmp_path, "edge")
    for bad in ("ab" * 32, "sha256:" + "ab" * 31, "sha1:" + "ab" * 20, "sha256:" + "zz" * 32):
        result = CliRunner().invoke(cli, [*command("edge", tmp_path, token), "--ca-fingerprint", bad])
        assert result.exit_code == 2, result.output
        assert "--ca-fingerprint" in result.output
    assert started == []


def test_a_file_that_is_no_join_token_is_refused_as_invalid(tmp_path: Path, started: list[str]) -> None:
    token = tmp_path / "token"
    token.write_text("not a token\n")
    result = CliRunner().invoke(cli, [*command("proxy", tmp_path, token), "--ca-fingerprint", CA])
    assert result.exit_code == 3, result.output
    assert f"{token} holds no readable join token" in result.output
    assert started == []


def test_a_missing_token_file_is_left_to_enrollment(tmp_path: Path, started: list[str]) -> None:
    """An enrolled host may have removed its token: the identity in the data dir is used."""
    result = CliRunner().invoke(
        cli, [*command("zone-cp", tmp_path, tmp_path / "gone"), "--ca-fingerprint", CA]
    )
    assert result.exit_code == 0, result.output
    assert started == ["zone-cp"]
