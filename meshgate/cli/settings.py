"""Where the CLI finds the server and its token: flags, then environment, then config file.

Environment: ``MESHGATE_SERVER``, ``MESHGATE_TOKEN``, ``MESHGATE_TOKEN_FILE``,
``MESHGATE_CA_FILE``, ``MESHGATE_CONFIG``. Config file (YAML, default
``~/.config/meshgate/config.yaml``): ``server``, ``token``, ``tokenFile``, ``caFile``.
With nothing set, a global CP on this machine with default settings is used, with the
admin token it wrote on first start.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_SERVER = "http://127.0.0.1:5680"


class SettingsError(Exception):
    pass


@dataclass(frozen=True)
class Settings:
    server: str
    token: str | None
    ca_file: Path | None
    timeout: float = 30.0


def default_config_path(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "meshgate" / "config.yaml"


def default_token_file(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "meshgate" / "global-cp" / "admin-token"


def _config(path: Path | None, env: Mapping[str, str]) -> dict[str, Any]:
    explicit = path or (Path(env["MESHGATE_CONFIG"]) if env.get("MESHGATE_CONFIG") else None)
    chosen = explicit or default_config_path(env)
    if not chosen.exists():
        if explicit is not None:
            raise SettingsError(f"config file {chosen} does not exist")
        return {}
    import yaml  # only here: `meshgate proxy|edge run` load this module and never a config file

    try:
        data = yaml.safe_load(chosen.read_text())
    except yaml.YAMLError as exc:
        raise SettingsError(f"config file {chosen}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or set(data) - {"server", "token", "tokenFile", "caFile"}:
        raise SettingsError(f"config file {chosen}: expected keys server, token, tokenFile, caFile")
    return data


def _read_token(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise SettingsError(f"cannot read token file {path}: {exc.strerror}") from None


def resolve(
    *,
    server: str | None = None,
    token: str | None = None,
    token_file: Path | None = None,
    ca_file: Path | None = None,
    config: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    env = os.environ if env is None else env
    cfg = _config(config, env)
    chosen_server = server or env.get("MESHGATE_SERVER") or cfg.get("server") or DEFAULT_SERVER
    chosen_token = token
    if chosen_token is None and token_file is not None:
        chosen_token = _read_token(token_file)
    if chosen_token is None:
        chosen_token = env.get("MESHGATE_TOKEN") or None
    if chosen_token is None and env.get("MESHGATE_TOKEN_FILE"):
        chosen_token = _read_token(Path(env["MESHGATE_TOKEN_FILE"]))
    if chosen_token is None and cfg.get("token"):
        chosen_token = str(cfg["token"])
    if chosen_token is None and cfg.get("tokenFile"):
        chosen_token = _read_token(Path(cfg["tokenFile"]))
    if chosen_token is None and chosen_server == DEFAULT_SERVER:
        fallback = default_token_file(env)
        if fallback.exists():
            chosen_token = _read_token(fallback)
    ca = ca_file or (Path(env["MESHGATE_CA_FILE"]) if env.get("MESHGATE_CA_FILE") else None)
    if ca is None and cfg.get("caFile"):
        ca = Path(cfg["caFile"])
    return Settings(chosen_server.rstrip("/"), chosen_token, ca)
