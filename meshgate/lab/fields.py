"""Field-level checks of a topology file: each function reads one value, reports what is wrong
with it at its field path and returns the value it understood (or None)."""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Callable, Mapping
from typing import Any

from meshgate.lab.errors import Violation

Report = Callable[[str, str], None]


class Problems:
    """Every violation found, in the order found."""

    def __init__(self) -> None:
        self.found: list[Violation] = []

    def __call__(self, path: str, message: str) -> None:
        self.found.append(Violation(path, message))

    def __bool__(self) -> bool:
        return bool(self.found)


def key_path(parent: str, key: str) -> str:
    return f"{parent}.{key}" if parent else key


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
            dict: "a mapping"}.get(type(value), type(value).__name__)  # fmt: skip


def string(value: Any, path: str, report: Report, *, allow_empty: bool = True) -> str | None:
    if not isinstance(value, str):
        report(path, f"must be a string, not {type_name(value)}")
        return None
    if not allow_empty and not value.strip():
        report(path, "must not be empty")
        return None
    return value


def scalar_text(value: Any, path: str, report: Report, *, allow_bool: bool = True) -> str | None:
    """A string, number or (if allowed) boolean, as the text containerlab would see."""
    if isinstance(value, bool):
        if not allow_bool:
            report(path, "must be a string or a number, not a boolean")
            return None
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return value
    report(path, f"must be a string or a number, not {type_name(value)}")
    return None


def mapping(value: Any, path: str, report: Report) -> Mapping[str, Any] | None:
    if value is None:
        return {}
    if not isinstance(value, dict):
        report(path, f"must be a mapping, not {type_name(value)}")
        return None
    bad = [key for key in value if not isinstance(key, str)]
    for key in bad:
        report(path, f"key {key!r} must be a string")
    return {key: item for key, item in value.items() if isinstance(key, str)}


def string_list(value: Any, path: str, report: Report) -> list[tuple[str, str]]:
    """(item, item path) for each string of a list; every other item is reported."""
    if not isinstance(value, list):
        report(path, f"must be a list of strings, not {type_name(value)}")
        return []
    items = []
    for index, item in enumerate(value):
        item_path = f"{path}[{index}]"
        if isinstance(item, str) and item.strip():
            items.append((item, item_path))
        else:
            report(item_path, "must be a non-empty string" if isinstance(item, str) else
                   f"must be a string, not {type_name(item)}")  # fmt: skip
    return items


def string_map(value: Any, path: str, report: Report, *, allow_bool: bool = True) -> dict[str, str]:
    found = mapping(value, path, report)
    result: dict[str, str] = {}
    for key, item in (found or {}).items():
        text = scalar_text(item, key_path(path, key), report, allow_bool=allow_bool)
        if text is not None:
            result[key] = text
    return result


def integer(
    value: Any, path: str, report: Report, *, minimum: int = 0, maximum: int | None = None
) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        report(path, f"must be a whole number, not {type_name(value)}")
        return None
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"{minimum}..{maximum}" if maximum is not None else f"at least {minimum}"
        report(path, f"must be {bounds}, not {value}")
        return None
    return value


def command(value: str, path: str, report: Report) -> tuple[str, ...] | None:
    """A command line split as containerlab splits it (shell-like words, no shell)."""
    try:
        argv = tuple(shlex.split(value))
    except ValueError as exc:
        report(path, f"cannot be split into words ({exc}): {value!r}")
        return None
    if not argv:
        report(path, "must not be empty")
        return None
    return argv


def ipv4_address(value: Any, path: str, report: Report) -> str | None:
    text = string(value, path, report)
    if text is None:
        return None
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        report(path, f"{text!r} is not an IPv4 address")
        return None


def ip_interface(value: Any, path: str, report: Report, *, version: int) -> str | None:
    text = string(value, path, report)
    if text is None:
        return None
    try:
        interface = ipaddress.ip_interface(text)
    except ValueError:
        interface = None
    if interface is None or interface.version != version or "/" not in text:
        report(path, f"{text!r} is not an IPv{version} address with a prefix length (a.b.c.d/len)")
        return None
    return str(interface)


def unknown_keys(
    found: Mapping[str, Any], known: set[str] | frozenset[str], path: str, report: Report
) -> None:
    for key in found:
        if key not in known:
            report(key_path(path, key), "unknown field")
