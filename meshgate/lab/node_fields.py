"""The fields of one node configuration level (``topology.defaults``, ``topology.kinds.K``,
``topology.groups.G``, ``topology.nodes.N``): checked where they are written, before the merge.

Fields fall in three sets: those the runner implements; those accepted without effect here
(images are the host's packages, no resource limits, no certificates...), reported as notes; and
those whose meaning cannot be kept without Docker (port publishing, volumes, other users...),
refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from meshgate.lab import fields as f
from meshgate.lab.model import STAGES, Healthcheck, StageCommand, StageConfig, WaitFor

IMPLEMENTED: Final = frozenset({
    "kind", "image", "group", "type", "cmd", "entrypoint", "exec", "binds", "env", "env-files",
    "labels", "mgmt-ipv4", "network-mode", "healthcheck", "stages", "restart-policy",
    "startup-delay", "sysctls", "tmpfs", "hostname",
})  # fmt: skip
IGNORED: Final = frozenset({
    "image-pull-policy", "runtime", "cpu", "cpu-set", "memory", "shm-size", "cap-add",
    "privileged", "cgroupns-mode", "cgroup-parent", "security-opts", "license", "startup-config",
    "enforce-startup-config", "suppress-startup-config", "aliases", "dns", "certificate", "extras",
    "config", "credentials", "link-apply-mode", "auto-remove", "components",
})  # fmt: skip
REFUSED: Final = {
    "ports": "port publishing needs Docker: reach nodes with `meshgate lab exec`",
    "volumes": "named volumes need Docker: use binds",
    "user": "node processes run as root",
    "devices": "host devices are not passed to nodes",
    "pid-mode": "nodes share the host's PID namespace",
    "mgmt-ipv6": "the management network is IPv4 only",
}
RESTART_POLICIES: Final = {
    "no": "no",
    "on-failure": "on-failure",
    "always": "always",
    "unless-stopped": "unless-stopped",
}
HEALTH_KEYS: Final = frozenset({"test", "interval", "timeout", "retries", "start-period"})


@dataclass
class Level:
    """What one level sets, each value with the field path it was written at."""

    path: str
    scalars: dict[str, tuple[Any, str]] = field(default_factory=dict)
    lists: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    maps: dict[str, dict[str, str]] = field(default_factory=dict)
    stages: dict[str, StageConfig] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)


def read_level(raw: Any, path: str, report: f.Report, *, node_level: bool) -> Level:
    level = Level(path)
    found = f.mapping(raw, path, report)
    if found is None:
        return level
    for key, value in found.items():
        where = f.key_path(path, key)
        if key in REFUSED:
            if key == "ports" and value == []:
                continue
            report(where, f"not supported by meshgate lab ({REFUSED[key]})")
        elif key in IGNORED:
            level.ignored.append(where)
        elif key not in IMPLEMENTED:
            report(where, "unknown field")
        else:
            _read_field(level, key, value, where, report, node_level=node_level)
    return level


def _read_field(
    level: Level, key: str, value: Any, where: str, report: f.Report, *, node_level: bool
) -> None:
    if key in ("kind", "image", "group", "type", "hostname"):
        text = f.string(value, where, report)
        if text is not None:
            level.scalars[key] = (text, where)
    elif key in ("cmd", "entrypoint"):
        text = f.string(value, where, report)
        if text is not None and (not text.strip() or f.command(text, where, report) is not None):
            level.scalars[key] = (text, where)
    elif key in ("exec", "binds", "env-files"):
        items = f.string_list(value, where, report)
        if key == "exec":
            items = [(text, path) for text, path in items if f.command(text, path, report) is not None]
        if key == "binds":
            items = [(text, path) for text, path in items if parse_bind(text, path, report) is not None]
        level.lists[key] = items
    elif key in ("env", "labels", "sysctls", "tmpfs"):
        level.maps[key] = _read_map(key, value, where, report)
    elif key == "mgmt-ipv4":
        if not node_level:
            report(where, "can only be set on a node (each node needs its own address)")
            return
        address = f.ipv4_address(value, where, report)
        if address is not None:
            level.scalars[key] = (address, where)
    elif key == "network-mode":
        text = f.string(value, where, report)
        if text is not None and text.lower() not in ("bridge", "none"):
            report(where, f"{text!r} is not supported by meshgate lab (only bridge, the default, and none)")
        elif text is not None:
            level.scalars[key] = (text.lower(), where)
    elif key == "restart-policy":
        text = f.string(value, where, report)
        if text is not None and text.lower() not in RESTART_POLICIES:
            report(where, f"must be one of {', '.join(RESTART_POLICIES)}, not {text!r}")
        elif text is not None:
            level.scalars[key] = (RESTART_POLICIES[text.lower()], where)
    elif key == "startup-delay":
        delay = f.integer(value, where, report)
        if delay is not None:
            level.scalars[key] = (delay, where)
    elif key == "healthcheck":
        check = read_healthcheck(value, where, report)
        if check is not None:
            level.scalars[key] = (check, where)
    elif key == "stages":
        level.stages = read_stages(value, where, report)


def _read_map(key: str, value: Any, where: str, report: f.Report) -> dict[str, str]:
    if key == "labels":
        labels = f.string_map(value, where, report, allow_bool=False)
        for name, text in labels.items():
            if not text:
                report(f.key_path(where, name), "must not be empty")
        return labels
    result = f.string_map(value, where, report)
    if key == "sysctls":
        for name in list(result):
            if not name.startswith("net."):
                report(
                    f.key_path(where, name),
                    "only net.* sysctls can be set (a node shares the host's kernel; others would change the host)",
                )
                del result[name]
    if key == "tmpfs":
        for path in list(result):
            if not path.startswith("/"):
                report(f.key_path(where, path), "must be an absolute path")
                del result[path]
    return result


def parse_bind(text: str, path: str, report: f.Report) -> tuple[str, str, bool] | None:
    """``source:target[:mode]`` as (source, target, read-only), or None after reporting."""
    parts = text.split(":")
    if len(parts) == 1:
        report(path, f"{text!r} looks like an anonymous volume (no host path): use source:target[:ro]")
        return None
    if len(parts) > 3:
        report(path, f"{text!r} is not source:target[:mode]")
        return None
    source, target = parts[0], parts[1]
    modes = parts[2].split(",") if len(parts) == 3 else []
    ok = True
    if not source:
        report(path, f"{text!r} has no host path")
        ok = False
    if not target.startswith("/"):
        report(path, f"target {target!r} must be an absolute path inside the node")
        ok = False
    unknown = [mode for mode in modes if mode not in ("ro", "rw", "z", "Z")]
    if unknown:
        report(path, f"mode {':'.join(unknown)!r} is not supported (ro or rw)")
        ok = False
    if "ro" in modes and "rw" in modes:
        report(path, "is both ro and rw")
        ok = False
    return (source, target, "ro" in modes) if ok else None


def read_healthcheck(value: Any, path: str, report: f.Report) -> Healthcheck | None:
    found = f.mapping(value, path, report)
    if found is None:
        return None
    f.unknown_keys(found, HEALTH_KEYS, path, report)
    ok = True
    argv: tuple[str, ...] = ()
    display = ""
    test = found.get("test")
    test_path = f.key_path(path, "test")
    if test is None:
        report(test_path, 'is required ([CMD-SHELL, "command"] or [CMD, program, args...])')
        ok = False
    elif not isinstance(test, list) or not all(isinstance(word, str) for word in test) or not test:
        report(test_path, 'must be a list of strings ([CMD-SHELL, "command"] or [CMD, program, args...])')
        ok = False
    elif test[0] == "CMD-SHELL" and len(test) == 2 and test[1].strip():
        argv, display = ("/bin/sh", "-c", test[1]), test[1]
    elif test[0] == "CMD" and len(test) >= 2:
        argv, display = tuple(test[1:]), " ".join(test[1:])
    elif test[0] == "NONE":
        return None
    else:
        report(test_path, 'must be [CMD-SHELL, "command"] or [CMD, program, args...] (or [NONE])')
        ok = False
    numbers: dict[str, int] = {}
    for key in ("interval", "timeout", "start-period", "retries"):
        if key in found:
            number = f.integer(found[key], f.key_path(path, key), report)
            if number is None:
                ok = False
            else:
                numbers[key] = number
    if not ok:
        return None
    check = Healthcheck(argv=argv, display=display)
    # docker: 0 means "the default"
    return Healthcheck(
        argv=argv,
        display=display,
        interval=float(numbers.get("interval") or check.interval),
        timeout=float(numbers.get("timeout") or check.timeout),
        start_period=float(numbers.get("start-period", 0)),
        retries=numbers.get("retries") or check.retries,
    )


def read_stages(value: Any, path: str, report: f.Report) -> dict[str, StageConfig]:
    found = f.mapping(value, path, report)
    stages: dict[str, StageConfig] = {}
    for stage, config in (found or {}).items():
        stage_path = f.key_path(path, stage)
        if stage not in STAGES:
            report(stage_path, f"unknown stage (one of {', '.join(STAGES)})")
            continue
        body = f.mapping(config, stage_path, report)
        if body is None:
            continue
        f.unknown_keys(body, {"wait-for", "exec"}, stage_path, report)
        wait_for = _read_wait_for(body.get("wait-for", []), f.key_path(stage_path, "wait-for"), report)
        commands = _read_stage_exec(body.get("exec", []), f.key_path(stage_path, "exec"), report)
        for index, command in enumerate(commands):
            if stage == "create" and command.target == "container" and command.phase == "on-enter":
                report(
                    f"{stage_path}.exec[{index}]",
                    "a command in the node cannot run on entering create (the node does not exist yet): use target: host, or phase: on-exit",
                )
        stages[stage] = StageConfig(wait_for=tuple(wait_for), commands=tuple(commands))
    return stages


def _read_wait_for(value: Any, path: str, report: f.Report) -> list[WaitFor]:
    if not isinstance(value, list):
        report(path, f"must be a list of {{node, stage}}, not {f.type_name(value)}")
        return []
    result: list[WaitFor] = []
    for index, item in enumerate(value):
        item_path = f"{path}[{index}]"
        body = f.mapping(item, item_path, report)
        if body is None:
            continue
        f.unknown_keys(body, {"node", "stage"}, item_path, report)
        node = f.string(body.get("node"), f.key_path(item_path, "node"), report, allow_empty=False)
        stage = body.get("stage")
        if stage not in STAGES:
            report(
                f.key_path(item_path, "stage"),
                f"must be one of {', '.join(STAGES)}" + ("" if stage is None else f", not {stage!r}"),
            )
            continue
        if node is not None:
            wait = WaitFor(node=node, stage=stage)
            if wait not in result:
                result.append(wait)
    return result


def _read_stage_exec(value: Any, path: str, report: f.Report) -> list[StageCommand]:
    """Both of the schema's forms: ``{on-enter: [...], on-exit: [...]}`` and
    ``[{command, target, phase}]``."""
    commands: list[StageCommand] = []
    if isinstance(value, dict):
        f.unknown_keys(value, {"on-enter", "on-exit"}, path, report)
        for phase in ("on-enter", "on-exit"):
            if phase in value:
                for text, item_path in f.string_list(value[phase], f.key_path(path, phase), report):
                    argv = f.command(text, item_path, report)
                    if argv is not None:
                        commands.append(StageCommand(command=text, argv=argv, phase=phase))
        return commands
    if not isinstance(value, list):
        report(
            path,
            f"must be a list of {{command, target, phase}} or {{on-enter, on-exit}}, not {f.type_name(value)}",
        )
        return commands
    for index, item in enumerate(value):
        item_path = f"{path}[{index}]"
        body = f.mapping(item, item_path, report)
        if body is None:
            continue
        f.unknown_keys(body, {"command", "target", "phase"}, item_path, report)
        command_text = f.string(
            body.get("command"), f.key_path(item_path, "command"), report, allow_empty=False
        )
        target = body.get("target", "container")
        phase = body.get("phase", "on-enter")
        ok = command_text is not None
        if target not in ("container", "host"):
            report(f.key_path(item_path, "target"), f"must be container or host, not {target!r}")
            ok = False
        if phase not in ("on-enter", "on-exit"):
            report(f.key_path(item_path, "phase"), f"must be on-enter or on-exit, not {phase!r}")
            ok = False
        argv = (
            f.command(command_text, f.key_path(item_path, "command"), report)
            if command_text is not None
            else None
        )
        if ok and argv is not None and command_text is not None:
            commands.append(StageCommand(command=command_text, argv=argv, target=target, phase=phase))
    return commands


def merge_stages(levels: list[Level]) -> dict[str, StageConfig]:
    """containerlab's merge: wait-for and commands appended from defaults to the node,
    a repeated wait-for once."""
    merged: dict[str, StageConfig] = {}
    for level in levels:
        for stage, config in level.stages.items():
            before = merged.get(stage, StageConfig())
            waits = list(before.wait_for) + [w for w in config.wait_for if w not in before.wait_for]
            merged[stage] = StageConfig(wait_for=tuple(waits), commands=before.commands + config.commands)
    return merged


def merged_map(levels: list[Level], key: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for level in levels:
        result.update(level.maps.get(key, {}))
    return result


def merged_list(levels: list[Level], key: str) -> list[tuple[str, str]]:
    """Concatenated from defaults to the node, repeated values once (the first path kept)."""
    seen: set[str] = set()
    result = []
    for level in levels:
        for text, path in level.lists.get(key, []):
            if text not in seen:
                seen.add(text)
                result.append((text, path))
    return result


def first_scalar(levels: list[Level], key: str) -> tuple[Any, str] | None:
    """The most specific level's value (levels are ordered defaults first)."""
    for level in reversed(levels):
        if key in level.scalars:
            return level.scalars[key]
    return None


def ignored_notes(levels: Mapping[str, Level]) -> list[str]:
    return [
        f"{where}: accepted, without effect in meshgate lab"
        for level in levels.values()
        for where in level.ignored
    ]
