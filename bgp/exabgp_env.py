"""The environment ExaBGP 5.0.15 runs with: every knob set explicitly, none inherited.

ExaBGP reads ``exabgp.<section>.<option>`` / ``exabgp_<section>_<option>`` from the environment,
then an INI file (``EXABGP_ENVFILE``, else ``<prefix>/etc/exabgp/exabgp.env``). Both are
overridden here so an operator's shell or a stray env file cannot change how it behaves
(knobs checked against ``exabgp/environment/setup.py`` of 5.0.15).
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Mapping
from pathlib import Path

ENV_FILE_TEXT = "# meshgate passes every ExaBGP setting in the environment; this file is empty on purpose.\n"


def user_name() -> str:
    """The current user: ExaBGP drops to ``nobody`` unless told to stay who it is."""
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        raise ValueError(f"uid {uid} has no passwd entry: ExaBGP needs a user name to run as") from None


def environment(base: Mapping[str, str], *, env_file: Path) -> dict[str, str]:
    """``base`` without any ExaBGP setting, plus ours. ``env_file`` must exist (ExaBGP logs an
    advice line when it does not): write ``ENV_FILE_TEXT`` to it."""
    env = {k: v for k, v in base.items() if not k.lower().startswith("exabgp")}
    env.update(
        {
            "EXABGP_ENVFILE": str(env_file),
            "exabgp_daemon_user": user_name(),
            "exabgp_daemon_daemonize": "false",
            "exabgp_daemon_pid": "",
            # no named pipes for `exabgp cli`: the helper is the only way in
            "exabgp_api_cli": "false",
            # `done` / `error` after every command: the speaker awaits them
            "exabgp_api_ack": "true",
            "exabgp_api_encoder": "json",
            # a dead helper is not restarted by ExaBGP: the speaker restarts ExaBGP as a whole
            "exabgp_api_respawn": "false",
            # and a helper ExaBGP can no longer write to makes it shut down (sessions close)
            "exabgp_api_terminate": "true",
            # no listening socket: the sessions are ours to open
            "exabgp_tcp_bind": "",
            "exabgp_log_destination": "stdout",
            "exabgp_log_short": "false",
            "exabgp_log_level": "INFO",
        }
    )
    return env
