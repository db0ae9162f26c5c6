"""An edge's own configuration file (YAML or JSON), checked with every problem's field path::

    name: edge-a1                  # its Edge resource's name; identity spiffe://<td>/zone/<z>/edge/<name>
    admin: 127.0.0.1:9903          # /healthz, /readyz, /metrics, /status
    listen: {address: 127.0.0.1, portOffset: 20000}   # optional: bind here, not on the VIPs
    probe: {interval: 1.0, timeout: 2.0, ejectAfter: 3}
    announce: {interval: 1.0, rise: 2, fall: 3, staleness: 600}
    drain: {threshold: 0, deadline: 30}
    zoneChoice: {hysteresis: 0.2, tie: 0.002}
    retry: {attempts: 3, budget: 0.2}
    headers: true                  # X-Meshgate-Edge / X-Meshgate-Zone on responses
    bgp: {enabled: true, exabgp: exabgp}
    http: {headerTimeout: 10, requestTimeout: 300, idleTimeout: 60, upstreamTimeout: 15,
           accessLog: {path: "-", sample: 0.01, errors: true}}

``listen`` is for machines where the VIPs cannot be local addresses (the demo, on loopback):
every public port ``p`` is served on ``address:p+portOffset`` instead, routed by Host.
``announce.staleness`` is how long the edge keeps announcing after losing its zone CP (its
configuration can no longer change; the zones' health it measures itself).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zones.config import ConfigError, HttpConfig, _http, _Reader


@dataclass(frozen=True)
class ListenOverride:
    address: str
    port_offset: int = 0


@dataclass(frozen=True)
class ProbeConfig:
    interval: float = 1.0
    timeout: float = 2.0
    eject_after: int = 3


@dataclass(frozen=True)
class AnnounceConfig:
    interval: float = 1.0
    rise: int = 2
    fall: int = 3
    staleness: float = 600.0


@dataclass(frozen=True)
class DrainConfig:
    threshold: int = 0
    deadline: float = 30.0


@dataclass(frozen=True)
class ChoiceConfig:
    hysteresis: float = 0.2
    tie: float = 0.002


@dataclass(frozen=True)
class RetryConfig:
    attempts: int = 3
    budget: float = 0.2


@dataclass(frozen=True)
class BgpConfig:
    enabled: bool = True
    exabgp: str = "exabgp"


@dataclass(frozen=True)
class EdgeConfig:
    name: str
    admin: tuple[str, int] | None = None
    listen: ListenOverride | None = None
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    announce: AnnounceConfig = field(default_factory=AnnounceConfig)
    drain: DrainConfig = field(default_factory=DrainConfig)
    choice: ChoiceConfig = field(default_factory=ChoiceConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    headers: bool = True
    bgp: BgpConfig = field(default_factory=BgpConfig)
    http: HttpConfig = field(default_factory=HttpConfig)


_TOP = {
    "name",
    "admin",
    "listen",
    "probe",
    "announce",
    "drain",
    "zoneChoice",
    "retry",
    "headers",
    "bgp",
    "http",
}


def _bool(r: _Reader, value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        r.fail(path, "must be true or false")
        return False
    return value


def _count(r: _Reader, value: Any, path: str, minimum: int) -> int:
    number = r.number(value, path, minimum)
    if number != int(number):
        r.fail(path, "must be a whole number")
    return int(number)


def parse(raw: Any) -> EdgeConfig:
    r = _Reader()
    doc = r.mapping(raw, "", _TOP)
    name = r.label(doc.get("name"), "name")
    admin = None
    if "admin" in doc:
        host, _, port = str(doc["admin"]).rpartition(":")
        admin = (r.ip(host, "admin"), r.port(int(port) if port.isdigit() else None, "admin"))
    listen = None
    if "listen" in doc:
        raw_listen = r.mapping(doc["listen"], "listen", {"address", "portOffset"})
        offset = raw_listen.get("portOffset", 0)
        if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset < 65535:
            r.fail("listen.portOffset", "must be an integer from 0 to 65534")
            offset = 0
        listen = ListenOverride(r.ip(raw_listen.get("address"), "listen.address"), offset)
    p = r.mapping(doc.get("probe", {}), "probe", {"interval", "timeout", "ejectAfter"})
    probe = ProbeConfig(
        r.number(p.get("interval", 1.0), "probe.interval", 0.05),
        r.number(p.get("timeout", 2.0), "probe.timeout", 0.05),
        _count(r, p.get("ejectAfter", 3), "probe.ejectAfter", 1),
    )
    a = r.mapping(doc.get("announce", {}), "announce", {"interval", "rise", "fall", "staleness"})
    announce = AnnounceConfig(
        r.number(a.get("interval", 1.0), "announce.interval", 0.05),
        _count(r, a.get("rise", 2), "announce.rise", 1),
        _count(r, a.get("fall", 3), "announce.fall", 1),
        r.number(a.get("staleness", 600.0), "announce.staleness", 0.0),
    )
    d = r.mapping(doc.get("drain", {}), "drain", {"threshold", "deadline"})
    drain = DrainConfig(
        _count(r, d.get("threshold", 0), "drain.threshold", 0),
        r.number(d.get("deadline", 30.0), "drain.deadline", 0.0),
    )
    c = r.mapping(doc.get("zoneChoice", {}), "zoneChoice", {"hysteresis", "tie"})
    choice = ChoiceConfig(
        r.number(c.get("hysteresis", 0.2), "zoneChoice.hysteresis", 0.0),
        r.number(c.get("tie", 0.002), "zoneChoice.tie", 0.0),
    )
    if choice.hysteresis >= 1.0:
        r.fail("zoneChoice.hysteresis", "must be a fraction below 1")
    t = r.mapping(doc.get("retry", {}), "retry", {"attempts", "budget"})
    retry = RetryConfig(
        _count(r, t.get("attempts", 3), "retry.attempts", 1),
        r.number(t.get("budget", 0.2), "retry.budget", 0.0),
    )
    if retry.budget > 1.0:
        r.fail("retry.budget", "must be between 0 and 1")
    b = r.mapping(doc.get("bgp", {}), "bgp", {"enabled", "exabgp"})
    exabgp = b.get("exabgp", "exabgp")
    if not isinstance(exabgp, str) or not exabgp:
        r.fail("bgp.exabgp", "must be a program name or path")
        exabgp = "exabgp"
    bgp = BgpConfig(_bool(r, b.get("enabled", True), "bgp.enabled"), exabgp)
    headers = _bool(r, doc.get("headers", True), "headers")
    http = _http(r, doc.get("http", {}))
    if r.problems:
        raise ConfigError(r.problems)
    return EdgeConfig(name, admin, listen, probe, announce, drain, choice, retry, headers, bgp, http)


def load(path: Path) -> EdgeConfig:
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        return parse(yaml.safe_load(text))
    return parse(json.loads(text))
