"""Start systemd units as systemd would, in a lab node that has no systemd.

usage: python3 unit-run.py [--unit-dir DIR] UNIT...
       (unit files in DIR, default /etc/systemd/system; NAME@INSTANCE.service is read from
       NAME@.service, %i being INSTANCE)

Terraform renders each host's units and config files once; cloud-init writes them on a real
host, and the lab binds the same files at the same paths into the node, whose command is this
script: so the lab runs exactly the command lines systemd would.

For each unit, in the order given: its EnvironmentFile= and Environment= on top of this
process's environment, each ExecStartPre= (waited for; a failure stops everything, unless the
command is prefixed with '-'), then ExecStart= in the background. Specifiers %i, %I, %n, %N, %p
and %% are expanded, then the words split (shell-like quoting), then ${VAR} within a word and
$VAR as a whole word (split on whitespace) as systemd does. SIGTERM or SIGINT goes to every
ExecStart= process, and ExecStopPost= runs once they have exited. When one exits on its own,
the others get SIGTERM and this script exits with its status: the lab's restart policy then
restarts the node's command, as Restart= would restart the unit.

Not done here (a lab node runs as root in its own namespaces): User=, Group=, capabilities,
sandboxing (Protect*=, PrivateTmp=), StateDirectory= (the lab binds the data directory), limits,
KillMode= and timeouts.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

UNITS = Path("/etc/systemd/system")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_WORD_VAR = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


class UnitError(Exception):
    pass


@dataclass
class Unit:
    name: str
    instance: str
    settings: dict[str, list[str]] = field(default_factory=dict)

    def all(self, key: str) -> list[str]:
        return self.settings.get(key, [])


def read_unit(name: str, directory: Path = UNITS) -> Unit:
    prefix, at, rest = name.partition("@")
    instance = rest.rsplit(".", 1)[0] if at else ""
    file = directory / (f"{prefix}@.{rest.rsplit('.', 1)[1]}" if at else name)
    try:
        text = file.read_text()
    except OSError as exc:
        raise UnitError(f"cannot read unit {name} ({file}): {exc.strerror or exc}") from None
    unit = Unit(name, instance)
    section = ""
    logical = ""
    for raw in text.splitlines():
        line = raw.strip()
        if logical:
            line = logical + " " + line
            logical = ""
        if line.endswith("\\"):
            logical = line[:-1].rstrip()
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise UnitError(f"{file}: cannot read line {raw!r}")
        if section == "Service":
            unit.settings.setdefault(key.strip(), []).append(value.strip())
    return unit


def specifiers(text: str, unit: Unit) -> str:
    prefix = unit.name.split("@", 1)[0].rsplit(".", 1)[0]
    table = {
        "i": unit.instance,
        "I": unit.instance,
        "n": unit.name,
        "N": unit.name.rsplit(".", 1)[0],
        "p": prefix,
        "%": "%",
    }

    def one(match: re.Match[str]) -> str:
        letter = match.group(1)
        if letter not in table:
            raise UnitError(f"{unit.name}: specifier %{letter} is not supported in the lab")
        return table[letter]

    return re.sub(r"%(.)", one, text)


def environment(unit: Unit, base: dict[str, str]) -> dict[str, str]:
    env = dict(base)
    for entry in unit.all("EnvironmentFile"):
        optional = entry.startswith("-")
        path = Path(specifiers(entry.removeprefix("-"), unit))
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            if optional:
                continue
            raise UnitError(f"{unit.name}: EnvironmentFile {path}: {exc.strerror or exc}") from None
        for line in lines:
            line = line.strip()
            if not line or line[0] in "#;" or "=" not in line:
                continue
            key, _, value = line.partition("=")
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            env[key.strip()] = value
    for entry in unit.all("Environment"):
        for word in shlex.split(specifiers(entry, unit)):
            key, _, value = word.partition("=")
            env[key] = value
    return env


def command(line: str, unit: Unit, env: dict[str, str]) -> tuple[list[str], bool]:
    """The argv of an Exec*= line, and whether its failure is ignored ('-' prefix)."""
    text = specifiers(line, unit)
    flags = re.match(r"[-+!:@]*", text)
    prefix = flags.group(0) if flags else ""
    if "@" in prefix:
        raise UnitError(f"{unit.name}: the '@' prefix is not supported in the lab")
    argv: list[str] = []
    for word in shlex.split(text[len(prefix) :]):
        whole = _WORD_VAR.fullmatch(word)
        if whole:
            argv.extend(env.get(whole.group(1), "").split())
            continue
        argv.append(_VAR.sub(lambda m: env.get(m.group(1), ""), word))
    if not argv:
        raise UnitError(f"{unit.name}: empty command {line!r}")
    return argv, "-" in prefix


def log(message: str) -> None:
    print(f"unit-run: {message}", file=sys.stderr, flush=True)


@dataclass
class Running:
    unit: Unit
    env: dict[str, str]
    process: subprocess.Popen[bytes]


def run_all(names: list[str], directory: Path = UNITS) -> int:
    base = dict(os.environ)
    base["MESHGATE_LAB_PYTHON"] = sys.executable  # for the lab's stand-in of the installed meshgate
    running: list[Running] = []
    stopping = False

    def signal_all(signum: int) -> None:
        for item in running:
            if item.process.returncode is None:
                item.process.send_signal(signum)

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        signal_all(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for name in names:
        unit = read_unit(name, directory)
        env = environment(unit, base)
        for line in unit.all("ExecStartPre"):
            argv, ignore = command(line, unit, env)
            done = subprocess.run(argv, env=env, check=False)
            if done.returncode != 0 and not ignore:
                log(f"{name}: ExecStartPre {shlex.join(argv)} exited {done.returncode}")
                signal_all(signal.SIGTERM)
                stop_all(running)
                return done.returncode
        starts = unit.all("ExecStart")
        if len(starts) != 1:
            raise UnitError(f"{name}: needs exactly one ExecStart=, has {len(starts)}")
        argv, _ = command(starts[0], unit, env)
        log(f"{name}: {shlex.join(argv)}")
        running.append(Running(unit, env, subprocess.Popen(argv, env=env)))
        if stopping:
            signal_all(signal.SIGTERM)
            break
    status = 0
    first = True
    while any(item.process.returncode is None for item in running):  # reaped here, by os.wait
        try:
            pid, wait_status = os.wait()
        except ChildProcessError:
            break
        for item in running:
            if item.process.pid == pid:
                item.process.returncode = os.waitstatus_to_exitcode(wait_status)
                if first:
                    status, first = item.process.returncode, False
                    if not stopping:
                        log(f"{item.unit.name} exited {status}: stopping the others")
                        signal_all(signal.SIGTERM)
    stop_all(running)
    return 0 if stopping else (status if status > 0 else 1)


def stop_all(running: list[Running]) -> None:
    """Run every started unit's ExecStopPost= once its process is gone."""
    for item in running:
        item.process.wait()
        for line in item.unit.all("ExecStopPost"):
            argv, _ = command(line, item.unit, item.env)
            subprocess.run(argv, env=item.env, check=False)


def main(argv: list[str]) -> int:
    directory = UNITS
    if argv[:1] == ["--unit-dir"] and len(argv) > 1:
        directory, argv = Path(argv[1]), argv[2:]
    if not argv or argv[0].startswith("-"):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        return run_all(argv, directory)
    except UnitError as exc:
        log(str(exc))
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
