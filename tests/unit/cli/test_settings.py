"""Where the CLI finds its server and token: flags, environment, config file, local default."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshgate.cli.settings import DEFAULT_SERVER, SettingsError, resolve


def test_flags_beat_environment_beat_config(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("server: http://from-config:1\ntoken: config-token\n")
    env = {
        "MESHGATE_CONFIG": str(config),
        "MESHGATE_SERVER": "http://from-env:2",
        "MESHGATE_TOKEN": "env-token",
    }
    assert resolve(env=env).server == "http://from-env:2"
    assert resolve(env=env).token == "env-token"
    assert resolve(server="http://flag:3", token="flag-token", env=env).token == "flag-token"
    only_config = {"MESHGATE_CONFIG": str(config)}
    chosen = resolve(env=only_config)
    assert (chosen.server, chosen.token) == ("http://from-config:1", "config-token")


def test_token_files(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("file-token\n")
    assert resolve(token_file=token, env={"HOME": str(tmp_path)}).token == "file-token"
    assert resolve(env={"MESHGATE_TOKEN_FILE": str(token), "HOME": str(tmp_path)}).token == "file-token"
    with pytest.raises(SettingsError, match="cannot read token file"):
        resolve(token_file=tmp_path / "missing", env={})


def test_local_default_uses_the_token_the_global_cp_wrote(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "meshgate" / "global-cp").mkdir(parents=True)
    (data / "meshgate" / "global-cp" / "admin-token").write_text("local-admin\n")
    env = {"XDG_DATA_HOME": str(data), "XDG_CONFIG_HOME": str(tmp_path / "none")}
    assert resolve(env=env).server == DEFAULT_SERVER
    assert resolve(env=env).token == "local-admin"
    # Never sent to another server than the local default.
    assert resolve(server="http://elsewhere:1", env=env).token is None


def test_bad_config_files_are_named(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("serverr: x\n")
    with pytest.raises(SettingsError, match="expected keys server, token, tokenFile, caFile"):
        resolve(config=config, env={})
    with pytest.raises(SettingsError, match="does not exist"):
        resolve(config=tmp_path / "nope.yaml", env={})
