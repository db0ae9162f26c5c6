"""``checks.yml``: a lab's named checks, each retried until it passes or its deadline passes.

Parsing and validation only (no I/O: text in, ``Check`` objects or every violation out)::

    defaults: {deadline: 30s, interval: 500ms}     # optional; these are the defaults
    checks:
      - name: eu router prefers the eu edge for the VIP
        deadline: 10s                               # optional, and so is interval
        route: {node: rtr-eu, prefix: 203.0.113.10/32, via: [10.1.1.2]}
      - name: an eu client is served by eu-west
        http: {node: client-eu, url: "http://203.0.113.10/", host: www.example.test,
               status: 200, headers: {x-meshgate-zone: eu-west}, body: "served by"}
      - name: the eu edge announces the VIP
        metric: {node: edge-eu, url: "http://127.0.0.1:9901/metrics",
                 name: meshgate_edge_vip_announced, labels: {vip: 203.0.113.10}, op: "==", value: 1}
      - name: the us router has its sessions
        command: {node: rtr-us, argv: [birdc, -s, /run/bird/bird.ctl, show, protocols],
                  exit: 0, stdout: "Established"}

Every violation is reported at once with its field path (``checks[2].http.status: ...``).
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, TypeVar
from urllib.parse import urlsplit

import yaml

DEFAULT_DEADLINE: Final = 30.0
DEFAULT_INTERVAL: Final = 0.5
KINDS: Final = ("route", "http", "metric", "command")
OPS: Final = ("==", "!=", ">=", "<=", ">", "<")

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m)")
_UNIT_SECONDS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0}
_NODE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}")
_HOSTNAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,252}")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

T = TypeVar("T")


class ChecksError(ValueError):
    """A checks file that cannot be used; ``violations`` lists every problem with its path."""

    def __init__(self, violations: list[str]) -> None:
        super().__init__("\n".join(violations))
        self.violations = violations


# -- durations ----------------------------------------------------------------------------------


def parse_duration(text: str) -> float:
    """Seconds in ``500ms``, ``30s``, ``1.5s``, ``2m``; ValueError otherwise."""
    match = _DURATION.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"{text!r} is not a duration (a number and a unit: 500ms, 30s, 2m)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def format_duration(seconds: float) -> str:
    """``0.25`` -> ``250ms``, ``30`` -> ``30s``, ``90`` -> ``1.5m`` (what ``parse_duration`` reads)."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    if seconds >= 60 and seconds % 30 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


# -- the model ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RouteSpec:
    """The node's kernel route for exactly ``prefix`` (main table, lowest metric): present (any
    next hop), present with exactly the next hops ``via`` (ECMP: all of them, in any order), or
    ``absent``."""

    kind: ClassVar[str] = "route"
    node: str
    prefix: str
    via: tuple[str, ...] | None = None
    absent: bool = False


@dataclass(frozen=True)
class HttpSpec:
    """A GET sent with curl from inside the node (so it follows the node's routes); ``host``
    replaces the URL's host for the Host header and SNI while still connecting to the URL's."""

    kind: ClassVar[str] = "http"
    node: str
    url: str
    host: str | None = None
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: re.Pattern[str] | None = None
    insecure: bool = False


@dataclass(frozen=True)
class MetricSpec:
    """One Prometheus sample scraped with curl inside the node: the series named ``name`` whose
    labels include ``labels`` (exactly one must match), compared with ``op`` to ``value``."""

    kind: ClassVar[str] = "metric"
    node: str
    url: str
    name: str
    op: str
    value: float
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CommandSpec:
    """A command run inside the node: its exit status, and ``stdout`` searched as a regex."""

    kind: ClassVar[str] = "command"
    node: str
    argv: tuple[str, ...]
    exit: int = 0
    stdout: re.Pattern[str] | None = None


Spec = RouteSpec | HttpSpec | MetricSpec | CommandSpec


@dataclass(frozen=True)
class Check:
    """One named check; ``index`` is its position in the file (``checks[index]``)."""

    name: str
    spec: Spec
    deadline: float = DEFAULT_DEADLINE
    interval: float = DEFAULT_INTERVAL
    index: int = 0

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def node(self) -> str:
        return self.spec.node

    @property
    def path(self) -> str:
        return f"checks[{self.index}].{self.kind}"


# -- parsing ------------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML that refuses a key given twice in one mapping (YAML would keep the last)."""


def _no_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _value in node.value:
        key = loader.construct_object(key_node)
        try:
            duplicate = key in seen
        except TypeError:
            continue  # unhashable: construct_mapping reports it
        if duplicate:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping", node.start_mark, f"key {key!r} given twice", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def load_checks(text: str) -> list[Check]:
    """The checks in ``checks.yml`` text; ``ChecksError`` with every violation otherwise."""
    try:
        document = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise ChecksError([f"{where}{exc.problem or exc}"]) from None
    except yaml.YAMLError as exc:
        raise ChecksError([f"not YAML: {exc}"]) from None
    return parse_checks(document)


def parse_checks(document: Any) -> list[Check]:
    """The checks of a decoded ``checks.yml``; ``ChecksError`` with every violation otherwise."""
    errors = _Errors()
    top = errors.mapping(document, "", required=("checks",), allowed=("checks", "defaults"))
    if top is None:
        raise ChecksError(errors.items)
    deadline, interval = DEFAULT_DEADLINE, DEFAULT_INTERVAL
    if "defaults" in top:
        defaults = errors.mapping(top["defaults"], "defaults", allowed=("deadline", "interval"))
        if defaults is not None:
            deadline = errors.optional(defaults, "deadline", "defaults", errors.duration, deadline)
            interval = errors.optional(defaults, "interval", "defaults", errors.positive_duration, interval)
    items = top.get("checks")
    checks: list[Check] = []
    if not isinstance(items, list):
        errors.add("checks", "must be a list of checks")
    elif not items:
        errors.add("checks", "is empty: list at least one check")
    else:
        named: dict[str, int] = {}
        for index, item in enumerate(items):
            check = _parse_check(item, index, deadline, interval, errors)
            if check is not None:
                checks.append(check)
            name = item.get("name") if isinstance(item, dict) else None
            if isinstance(name, str) and name in named:
                errors.add(f"checks[{index}].name", f"{name!r} is also the name of checks[{named[name]}]")
            elif isinstance(name, str):
                named[name] = index
    if errors.items:
        raise ChecksError(errors.items)
    return checks


def unknown_nodes(checks: list[Check], nodes: Mapping[str, object]) -> list[str]:
    """Violations for checks that name a node the lab does not have."""
    known = ", ".join(sorted(nodes))
    return [
        f"{check.path}.node: no node {check.node!r} in this lab (nodes: {known})"
        for check in checks
        if check.node not in nodes
    ]


def _parse_check(item: Any, index: int, deadline: float, interval: float, errors: _Errors) -> Check | None:
    path = f"checks[{index}]"
    check = errors.mapping(item, path, required=("name",), allowed=("name", "deadline", "interval", *KINDS))
    if check is None:
        return None
    name = errors.optional(check, "name", path, errors.text, "")
    deadline = errors.optional(check, "deadline", path, errors.duration, deadline)
    interval = errors.optional(check, "interval", path, errors.positive_duration, interval)
    kinds = [kind for kind in KINDS if kind in check]
    if len(kinds) != 1:
        found = f"has {' and '.join(kinds)}" if kinds else "has none"
        errors.add(path, f"{found}; a check has exactly one of {', '.join(KINDS)}")
        return None
    kind = kinds[0]
    spec = _SPEC_PARSERS[kind](check[kind], f"{path}.{kind}", errors)
    if spec is None or not name:
        return None
    return Check(name=name, spec=spec, deadline=deadline, interval=interval, index=index)


def _parse_route(value: Any, path: str, errors: _Errors) -> RouteSpec | None:
    spec = errors.mapping(
        value, path, required=("node", "prefix"), allowed=("node", "prefix", "via", "absent")
    )
    if spec is None:
        return None
    before = len(errors.items)
    node = errors.optional(spec, "node", path, errors.node, "")
    prefix = errors.optional(spec, "prefix", path, errors.prefix, "")
    via = errors.optional(spec, "via", path, errors.addresses, None)
    absent = errors.optional(spec, "absent", path, errors.boolean, False)
    if absent and via is not None:
        errors.add(f"{path}.via", "absent: true takes no via (a route that is not there has no next hop)")
    if len(errors.items) > before:
        return None
    return RouteSpec(node=node, prefix=prefix, via=via, absent=absent)


def _parse_http(value: Any, path: str, errors: _Errors) -> HttpSpec | None:
    allowed = ("node", "url", "host", "status", "headers", "body", "insecure")
    spec = errors.mapping(value, path, required=("node", "url"), allowed=allowed)
    if spec is None:
        return None
    before = len(errors.items)
    node = errors.optional(spec, "node", path, errors.node, "")
    url = errors.optional(spec, "url", path, errors.url, "")
    host = errors.optional(spec, "host", path, errors.hostname, None)
    status = errors.optional(spec, "status", path, errors.status, 200)
    headers: dict[str, str] = errors.optional(spec, "headers", path, errors.headers, {})
    body = errors.optional(spec, "body", path, errors.regex, None)
    insecure = errors.optional(spec, "insecure", path, errors.boolean, False)
    if len(errors.items) > before:
        return None
    return HttpSpec(
        node=node, url=url, host=host, status=status, headers=headers, body=body, insecure=insecure
    )


def _parse_metric(value: Any, path: str, errors: _Errors) -> MetricSpec | None:
    required = ("node", "url", "name", "op", "value")
    spec = errors.mapping(value, path, required=required, allowed=(*required, "labels"))
    if spec is None:
        return None
    before = len(errors.items)
    node = errors.optional(spec, "node", path, errors.node, "")
    url = errors.optional(spec, "url", path, errors.url, "")
    name = errors.optional(spec, "name", path, errors.metric_name, "")
    labels: dict[str, str] = errors.optional(spec, "labels", path, errors.labels, {})
    op = errors.optional(spec, "op", path, errors.op, "==")
    number = errors.optional(spec, "value", path, errors.number, 0.0)
    if len(errors.items) > before:
        return None
    return MetricSpec(node=node, url=url, name=name, labels=labels, op=op, value=number)


def _parse_command(value: Any, path: str, errors: _Errors) -> CommandSpec | None:
    spec = errors.mapping(value, path, required=("node", "argv"), allowed=("node", "argv", "exit", "stdout"))
    if spec is None:
        return None
    before = len(errors.items)
    node = errors.optional(spec, "node", path, errors.node, "")
    argv: tuple[str, ...] = errors.optional(spec, "argv", path, errors.argv, ())
    status = errors.optional(spec, "exit", path, errors.exit_status, 0)
    stdout = errors.optional(spec, "stdout", path, errors.regex, None)
    if len(errors.items) > before:
        return None
    return CommandSpec(node=node, argv=argv, exit=status, stdout=stdout)


_SPEC_PARSERS: Final[dict[str, Callable[[Any, str, _Errors], Spec | None]]] = {
    "route": _parse_route,
    "http": _parse_http,
    "metric": _parse_metric,
    "command": _parse_command,
}


class _Errors:
    """Collects violations; each field reader returns the value or raises ``_Invalid``."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{path}: {message}" if path else message)

    def mapping(
        self, value: Any, path: str, *, required: tuple[str, ...] = (), allowed: tuple[str, ...]
    ) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.add(path or "checks file", f"must be a mapping with {', '.join(allowed)}")
            return None
        for key in value:
            if key not in allowed:
                self.add(_join(path, str(key)), f"unknown key (known: {', '.join(allowed)})")
        for key in required:
            if key not in value:
                self.add(_join(path, key), "is required")
        return {str(key): item for key, item in value.items() if key in allowed}

    def optional(self, spec: dict[str, Any], key: str, path: str, read: Callable[[Any], T], default: T) -> T:
        if key not in spec:
            return default
        try:
            return read(spec[key])
        except _Invalid as exc:
            self.add(_join(path, key), str(exc))
            return default

    # -- field readers (raise _Invalid) --------------------------------------------------------

    @staticmethod
    def text(value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise _Invalid("must be a non-empty string")
        if _CONTROL.search(value):
            raise _Invalid("must not hold control characters")
        return value

    @staticmethod
    def node(value: Any) -> str:
        if not isinstance(value, str) or not _NODE.fullmatch(value):
            raise _Invalid(f"{value!r} is not a node name (letters, digits, _ . -)")
        return value

    @staticmethod
    def boolean(value: Any) -> bool:
        if not isinstance(value, bool):
            raise _Invalid("must be true or false")
        return value

    @staticmethod
    def duration(value: Any) -> float:
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise _Invalid(str(exc)) from None

    @classmethod
    def positive_duration(cls, value: Any) -> float:
        seconds = cls.duration(value)
        if seconds <= 0:
            raise _Invalid("must be more than 0")
        return seconds

    @staticmethod
    def prefix(value: Any) -> str:
        if not isinstance(value, str):
            raise _Invalid("must be a prefix such as 203.0.113.10/32")
        try:
            return str(ipaddress.ip_network(value, strict=True))
        except ValueError as exc:
            hint = ""
            if "host bits set" in str(exc):
                hint = f" (did you mean {ipaddress.ip_network(value, strict=False)}?)"
            raise _Invalid(f"{value!r} is not a prefix: {exc}{hint}") from None

    @staticmethod
    def addresses(value: Any) -> tuple[str, ...]:
        if not isinstance(value, list) or not value:
            raise _Invalid("must be a non-empty list of next-hop addresses, e.g. [10.1.1.2]")
        found = []
        for index, item in enumerate(value):
            try:
                found.append(str(ipaddress.ip_address(item)))
            except ValueError:
                raise _Invalid(f"[{index}] {item!r} is not an IP address") from None
        if len(set(found)) != len(found):
            raise _Invalid("lists an address twice")
        return tuple(found)

    @staticmethod
    def url(value: Any) -> str:
        if not isinstance(value, str) or _CONTROL.search(value) or " " in value:
            raise _Invalid("must be an http:// or https:// URL")
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 (raises on a bad port)
        except ValueError as exc:
            raise _Invalid(f"{value!r} is not a URL: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise _Invalid(f"{value!r} is not an http:// or https:// URL with a host")
        return value

    @staticmethod
    def hostname(value: Any) -> str:
        if not isinstance(value, str) or not _HOSTNAME.fullmatch(value):
            raise _Invalid(f"{value!r} is not a host name (www.example.test)")
        return value

    @staticmethod
    def status(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 599:
            raise _Invalid("must be an HTTP status (100-599)")
        return value

    @staticmethod
    def exit_status(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
            raise _Invalid("must be an exit status (0-255)")
        return value

    @staticmethod
    def number(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise _Invalid("must be a number")
        return float(value)

    @staticmethod
    def op(value: Any) -> str:
        if value not in OPS:
            raise _Invalid(f"must be one of {' '.join(OPS)} (quote it in YAML)")
        return str(value)

    @staticmethod
    def regex(value: Any) -> re.Pattern[str]:
        if not isinstance(value, str) or not value:
            raise _Invalid("must be a non-empty regular expression")
        try:
            return re.compile(value)
        except re.error as exc:
            raise _Invalid(f"{value!r} is not a regular expression: {exc}") from None

    @staticmethod
    def metric_name(value: Any) -> str:
        if not isinstance(value, str) or not _METRIC_NAME.fullmatch(value):
            raise _Invalid(f"{value!r} is not a metric name")
        return value

    @staticmethod
    def _string_map(value: Any, key_pattern: re.Pattern[str], what: str) -> dict[str, str]:
        if not isinstance(value, dict):
            raise _Invalid(f"must be a mapping of {what} to values")
        found = {}
        for key, item in value.items():
            if not isinstance(key, str) or not key_pattern.fullmatch(key):
                raise _Invalid(f"{key!r} is not a {what}")
            if isinstance(item, bool) or not isinstance(item, str | int):
                raise _Invalid(f"{key}: must be a string (quote it in YAML)")
            if _CONTROL.search(str(item)):
                raise _Invalid(f"{key}: must not hold control characters")
            found[key] = str(item)
        return found

    @classmethod
    def headers(cls, value: Any) -> dict[str, str]:
        return {
            name.lower(): item for name, item in cls._string_map(value, _HEADER_NAME, "header name").items()
        }

    @classmethod
    def labels(cls, value: Any) -> dict[str, str]:
        return cls._string_map(value, _LABEL_NAME, "label name")

    @staticmethod
    def argv(value: Any) -> tuple[str, ...]:
        if not isinstance(value, list) or not value:
            raise _Invalid("must be a non-empty list of strings (the program and its arguments)")
        for index, item in enumerate(value):
            if not isinstance(item, str | int) or isinstance(item, bool):
                raise _Invalid(f"[{index}] must be a string (quote it in YAML)")
            if "\x00" in str(item):
                raise _Invalid(f"[{index}] must not hold NUL")
        return tuple(str(item) for item in value)


class _Invalid(Exception):
    """One field's violation (its message, without the path)."""


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
