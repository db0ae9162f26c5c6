"""``scenarios.yml``: a lab's failure scenarios, each run under client load. Parsing only (no I/O).

::

    load: {clients: [client-eu, client-us], url: "http://203.0.113.10/", host: web.example,
           threads: 3, seconds: 12, method: GET}
    workloads: {role: workload}          # label selector: nodes whose received requests count
    pin: {node: rtr-eu, prefix: 203.0.113.10/32, next_hops: {10.1.1.2: eth1, 10.0.0.2: eth9}}
    scenarios:
      edge-failure:
        about: edge-eu dies
        action: {kill: [edge-eu]}        # or stop, start, drain, undrain, partition, heal
        converged: {deadline: 30s, route: {...}}   # one check (checks.yml's format): the switch
        restore: {start: [edge-eu]}
        restored: {deadline: 90s, route: {...}}
        expect: {ledger: holds, failed_after_switch: 0}
        expect_pinned: {ledger: holds, failed: 0}  # instead of expect, with --pin

Actions: ``kill``/``stop``/``start`` a list of nodes (SIGKILL or SIGTERM every process of the
node; start its ``cmd`` again), ``drain``/``undrain`` an edge (``meshgate edge drain`` through
the node labelled ``role: global-cp``), ``partition: {node, between: [A, B]}`` (nft on a router
drops forwarding between two prefixes, both ways) and ``heal: {node}``. Every violation is
reported at once with its field path.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from meshgate.lab.checks import Check, ChecksError, parse_checks

NODE_ACTIONS: Final = ("kill", "stop", "start")
EDGE_ACTIONS: Final = ("drain", "undrain")
ROUTER_ACTIONS: Final = ("partition", "heal")
ACTIONS: Final = NODE_ACTIONS + EDGE_ACTIONS + ROUTER_ACTIONS
EXPECTATIONS: Final = ("ledger", "failed", "failed_after_switch")


class ScenariosError(ValueError):
    def __init__(self, violations: list[str]) -> None:
        super().__init__("\n".join(violations))
        self.violations = violations


@dataclass(frozen=True)
class Load:
    clients: tuple[str, ...]
    url: str
    host: str
    threads: int = 3
    seconds: float = 12.0
    method: str = "GET"


@dataclass(frozen=True)
class Pin:
    node: str
    prefix: str
    next_hops: Mapping[str, str]


@dataclass(frozen=True)
class Action:
    kind: str  # one of ACTIONS
    nodes: tuple[str, ...] = ()  # kill/stop/start; drain/undrain: the edge; partition/heal: the router
    between: tuple[str, str] | None = None  # partition


@dataclass(frozen=True)
class Scenario:
    name: str
    about: str
    action: Action
    restore: Action | None = None
    converged: Check | None = None
    restored: Check | None = None
    expect: Mapping[str, Any] = field(default_factory=dict)
    expect_pinned: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Scenarios:
    load: Load
    workloads: Mapping[str, str]  # label selector
    pin: Pin | None
    scenarios: Mapping[str, Scenario]


def load_scenarios(text: str) -> Scenarios:
    import yaml

    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScenariosError([f"not YAML: {exc}"]) from None
    return parse_scenarios(document)


def parse_scenarios(document: Any) -> Scenarios:
    problems: list[str] = []
    if not isinstance(document, dict):
        raise ScenariosError(["(top): must be a mapping with load, scenarios"])
    _unknown(document, ("load", "workloads", "pin", "scenarios"), "", problems)
    load = _load(document.get("load"), problems)
    workloads = document.get("workloads", {"role": "workload"})
    if not isinstance(workloads, dict) or not all(isinstance(v, str) for v in workloads.values()):
        problems.append("workloads: must be a label selector (a mapping of strings)")
        workloads = {}
    pin = _pin(document["pin"], problems) if "pin" in document else None
    raw = document.get("scenarios")
    scenarios: dict[str, Scenario] = {}
    if not isinstance(raw, dict) or not raw:
        problems.append("scenarios: must map at least one scenario name to its definition")
    else:
        for name, spec in raw.items():
            scenario = _scenario(str(name), spec, problems)
            if scenario is not None:
                scenarios[str(name)] = scenario
    if problems or load is None:
        raise ScenariosError(problems or ["load: required"])
    return Scenarios(load, {str(k): str(v) for k, v in workloads.items()}, pin, scenarios)


def _unknown(spec: Mapping[str, Any], allowed: tuple[str, ...], path: str, problems: list[str]) -> None:
    for key in spec:
        if key not in allowed:
            where = f"{path}.{key}" if path else str(key)
            problems.append(f"{where}: unknown field (expected one of {', '.join(allowed)})")


def _load(raw: Any, problems: list[str]) -> Load | None:
    if not isinstance(raw, dict):
        problems.append("load: required, a mapping with clients, url, host")
        return None
    _unknown(raw, ("clients", "url", "host", "threads", "seconds", "method"), "load", problems)
    clients = raw.get("clients")
    if not isinstance(clients, list) or not clients or not all(isinstance(c, str) for c in clients):
        problems.append("load.clients: a non-empty list of node names")
        clients = []
    url, host = raw.get("url"), raw.get("host")
    if not isinstance(url, str) or not url.startswith("http://"):
        problems.append("load.url: an http:// URL")
    if not isinstance(host, str) or not host:
        problems.append("load.host: the Host header to send")
    threads, seconds = raw.get("threads", 3), raw.get("seconds", 12)
    if not isinstance(threads, int) or isinstance(threads, bool) or not 1 <= threads <= 64:
        problems.append("load.threads: an integer from 1 to 64")
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or not 1 <= seconds <= 600:
        problems.append("load.seconds: a number of seconds from 1 to 600")
    method = raw.get("method", "GET")
    if method not in ("GET", "POST"):
        problems.append("load.method: GET or POST")
    if not isinstance(url, str) or not isinstance(host, str):
        return None
    return Load(tuple(clients), url, host, int(threads), float(seconds), str(method))


def _pin(raw: Any, problems: list[str]) -> Pin | None:
    if not isinstance(raw, dict):
        problems.append("pin: a mapping with node, prefix, next_hops")
        return None
    _unknown(raw, ("node", "prefix", "next_hops"), "pin", problems)
    node, prefix, hops = raw.get("node"), raw.get("prefix"), raw.get("next_hops")
    ok = True
    if not isinstance(node, str):
        problems.append("pin.node: the router whose flows are pinned")
        ok = False
    try:
        ipaddress.IPv4Network(str(prefix))
    except ValueError:
        problems.append(f"pin.prefix: {prefix!r} is not an IPv4 prefix")
        ok = False
    if not isinstance(hops, dict) or not hops:
        problems.append("pin.next_hops: a mapping of next-hop address to the router's interface")
        ok = False
    else:
        for address in hops:
            try:
                ipaddress.IPv4Address(str(address))
            except ValueError:
                problems.append(f"pin.next_hops.{address}: not an IPv4 address")
                ok = False
    if not ok:
        return None
    assert isinstance(node, str) and isinstance(hops, dict)
    return Pin(node, str(prefix), {str(k): str(v) for k, v in hops.items()})


def _scenario(name: str, spec: Any, problems: list[str]) -> Scenario | None:
    path = f"scenarios.{name}"
    if not isinstance(spec, dict):
        problems.append(f"{path}: a mapping with at least an action")
        return None
    allowed = ("about", "action", "converged", "restore", "restored", "expect", "expect_pinned")
    _unknown(spec, allowed, path, problems)
    action = _action(spec.get("action"), f"{path}.action", problems)
    restore = _action(spec["restore"], f"{path}.restore", problems) if "restore" in spec else None
    converged = _check(spec, "converged", path, problems)
    restored = _check(spec, "restored", path, problems)
    expect = _expect(spec.get("expect", {"ledger": "holds"}), f"{path}.expect", problems)
    pinned = _expect(spec.get("expect_pinned", expect), f"{path}.expect_pinned", problems)
    if action is None:
        return None
    return Scenario(name, str(spec.get("about", "")), action, restore, converged, restored, expect, pinned)


def _action(raw: Any, path: str, problems: list[str]) -> Action | None:
    if not isinstance(raw, dict) or len(raw) != 1:
        problems.append(f"{path}: exactly one of {', '.join(ACTIONS)}")
        return None
    ((kind, value),) = raw.items()
    if kind in NODE_ACTIONS:
        if not isinstance(value, list) or not value or not all(isinstance(n, str) for n in value):
            problems.append(f"{path}.{kind}: a non-empty list of node names")
            return None
        return Action(kind, tuple(value))
    if kind in EDGE_ACTIONS:
        if not isinstance(value, str):
            problems.append(f"{path}.{kind}: the edge node's name (its Edge resource has the same name)")
            return None
        return Action(kind, (value,))
    if kind in ROUTER_ACTIONS:
        if not isinstance(value, dict) or not isinstance(value.get("node"), str):
            problems.append(f"{path}.{kind}.node: the router's node name")
            return None
        if kind == "heal":
            _unknown(value, ("node",), f"{path}.{kind}", problems)
            return Action(kind, (value["node"],))
        _unknown(value, ("node", "between"), f"{path}.{kind}", problems)
        between = value.get("between")
        try:
            if not isinstance(between, list) or len(between) != 2:
                raise ValueError
            a, b = (str(ipaddress.IPv4Network(str(p))) for p in between)
        except ValueError:
            problems.append(f"{path}.{kind}.between: two IPv4 prefixes")
            return None
        return Action(kind, (value["node"],), (a, b))
    problems.append(f"{path}: unknown action {kind!r} (expected one of {', '.join(ACTIONS)})")
    return None


def _check(spec: Mapping[str, Any], key: str, path: str, problems: list[str]) -> Check | None:
    if key not in spec:
        return None
    raw = spec[key]
    item = {"name": f"{path}.{key}", **raw} if isinstance(raw, dict) else raw
    try:
        (check,) = parse_checks({"checks": [item]})
    except ChecksError as exc:
        problems += [v.replace("checks[0]", f"{path}.{key}", 1) for v in exc.violations]
        return None
    return check


def _expect(raw: Any, path: str, problems: list[str]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        problems.append(f"{path}: a mapping of {', '.join(EXPECTATIONS)}")
        return {}
    _unknown(raw, EXPECTATIONS, path, problems)
    if "ledger" in raw and raw["ledger"] != "holds":
        problems.append(f"{path}.ledger: only 'holds' can be expected")
    for key in ("failed", "failed_after_switch"):
        value = raw.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            problems.append(f"{path}.{key}: a count (at most this many)")
    return dict(raw)


__all__ = ["Scenario", "Scenarios", "ScenariosError", "load_scenarios", "parse_scenarios"]
