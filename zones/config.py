"""A proxy's own configuration file: what it fronts and where it listens (YAML or JSON).

Checked by hand (the proxy does not load the control plane's validation stack), reporting every
problem with its field path::

    name: web-1                      # unique in the zone; its Dataplane is <zone>.<name>
    service: web                     # local proxies: the service whose instances it fronts
    inbound: {address: 0.0.0.0, port: 10001, advertise: 10.0.0.5}
    instances: [{address: 127.0.0.1, port: 8080}]
    health: {type: http, path: /healthz, interval: 1.0, timeout: 1.0, rise: 2, fall: 2}
    outbounds: [{service: payments, port: 15001}]   # apps dial 127.0.0.1:15001
    meshOutbound: {port: 15080}      # HTTP routed by Host: apps call http://<service>.mesh/
    protocol: http                   # the inbound's: http or tcp (default: the Service's first port)
    http: {headerTimeout: 10, requestTimeout: 300, idleTimeout: 60, upstreamTimeout: 15,
           accessLog: {path: "-", sample: 0.01, errors: true}}
    admin: 127.0.0.1:9901

Each outbound's ``protocol`` (http or tcp) defaults to the called Service's first port, as the
zone CP sends it; ``protocol`` set here wins. ``accessLog.path`` ``-`` is standard output.

An ingress has ``name``, ``listen: {address, port, advertise}`` and ``admin``.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


class ConfigError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Address:
    address: str
    port: int
    advertise: str = ""

    @property
    def advertised(self) -> str:
        return self.advertise or self.address


@dataclass(frozen=True)
class Instance:
    address: str
    port: int


@dataclass(frozen=True)
class HealthCheck:
    type: str = "tcp"  # or "http"
    path: str = "/"
    interval: float = 1.0
    timeout: float = 1.0
    rise: int = 2
    fall: int = 2


@dataclass(frozen=True)
class Outbound:
    service: str
    port: int
    address: str = "127.0.0.1"
    protocol: str = ""  # "": the Service's, as the zone CP sends it


@dataclass(frozen=True)
class AccessLogConfig:
    path: str = "-"
    sample: float = 1.0
    errors: bool = True


@dataclass(frozen=True)
class HttpConfig:
    header_timeout: float = 10.0
    request_timeout: float = 300.0
    idle_timeout: float = 60.0
    upstream_timeout: float = 15.0
    access_log: AccessLogConfig | None = None


@dataclass(frozen=True)
class ProxyConfig:
    role: str
    name: str
    service: str = ""
    inbound: Address | None = None
    instances: tuple[Instance, ...] = ()
    health: HealthCheck = field(default_factory=HealthCheck)
    outbounds: tuple[Outbound, ...] = ()
    mesh_outbound: Address | None = None
    protocol: str = ""  # the inbound's; "": the Service's
    http: HttpConfig = field(default_factory=HttpConfig)
    listen: Address | None = None  # ingress
    admin: tuple[str, int] | None = None


class _Reader:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def fail(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def mapping(self, value: Any, path: str, allowed: set[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(path, "must be a mapping")
            return {}
        for key in sorted(set(value) - allowed):
            self.fail(f"{path}.{key}" if path else key, "unknown field")
        return value

    def label(self, value: Any, path: str) -> str:
        if not isinstance(value, str) or not _LABEL.fullmatch(value):
            self.fail(path, "must be a DNS label (lowercase letters, digits, '-')")
            return ""
        return value

    def port(self, value: Any, path: str) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 65535:
            self.fail(path, "must be a port number")
            return 0
        return value

    def ip(self, value: Any, path: str) -> str:
        try:
            return str(ipaddress.ip_address(value))
        except (ValueError, TypeError):
            self.fail(path, "must be an IP address")
            return ""

    def number(self, value: Any, path: str, minimum: float) -> float:
        if not isinstance(value, int | float) or isinstance(value, bool) or value < minimum:
            self.fail(path, f"must be a number of at least {minimum}")
            return minimum
        return float(value)

    def address(self, value: Any, path: str) -> Address:
        raw = self.mapping(value, path, {"address", "port", "advertise"})
        advertise = self.ip(raw["advertise"], f"{path}.advertise") if "advertise" in raw else ""
        return Address(
            self.ip(raw.get("address"), f"{path}.address"),
            self.port(raw.get("port"), f"{path}.port"),
            advertise,
        )


def parse(raw: Any, role: str) -> ProxyConfig:
    r = _Reader()
    common = {"name", "admin"}
    allowed = common | (
        {"listen"}
        if role == "ingress"
        else {"service", "inbound", "instances", "health", "outbounds", "meshOutbound", "protocol", "http"}
    )
    doc = r.mapping(raw, "", allowed)
    name = r.label(doc.get("name", socket.gethostname().split(".")[0].lower()), "name")
    admin = None
    if "admin" in doc:
        host, _, port = str(doc["admin"]).rpartition(":")
        admin = (r.ip(host, "admin"), r.port(int(port) if port.isdigit() else None, "admin"))
    if role == "ingress":
        listen = r.address(doc.get("listen", {}), "listen")
        if r.problems:
            raise ConfigError(r.problems)
        return ProxyConfig(role, name, listen=listen, admin=admin)
    service = r.label(doc.get("service"), "service")
    inbound = r.address(doc.get("inbound", {}), "inbound")
    instances = []
    raw_instances = doc.get("instances", [])
    if not isinstance(raw_instances, list) or not raw_instances:
        r.fail("instances", "must list at least one instance")
        raw_instances = []
    for i, item in enumerate(raw_instances):
        entry = r.mapping(item, f"instances[{i}]", {"address", "port"})
        instances.append(Instance(r.ip(entry.get("address"), f"instances[{i}].address"),
                                  r.port(entry.get("port"), f"instances[{i}].port")))  # fmt: skip
    health = _health(r, doc.get("health", {}))
    outbounds = []
    for i, item in enumerate(doc.get("outbounds", []) or []):
        entry = r.mapping(item, f"outbounds[{i}]", {"service", "port", "address", "protocol"})
        outbounds.append(Outbound(r.label(entry.get("service"), f"outbounds[{i}].service"),
                                  r.port(entry.get("port"), f"outbounds[{i}].port"),
                                  r.ip(entry.get("address", "127.0.0.1"), f"outbounds[{i}].address"),
                                  _protocol(r, entry.get("protocol", ""), f"outbounds[{i}].protocol")))  # fmt: skip
    mesh_outbound = None
    if "meshOutbound" in doc:
        raw_mesh = r.mapping(doc["meshOutbound"], "meshOutbound", {"address", "port"})
        mesh_outbound = Address(
            r.ip(raw_mesh.get("address", "127.0.0.1"), "meshOutbound.address"),
            r.port(raw_mesh.get("port"), "meshOutbound.port"),
        )
    protocol = _protocol(r, doc.get("protocol", ""), "protocol")
    http = _http(r, doc.get("http", {}))
    if r.problems:
        raise ConfigError(r.problems)
    return ProxyConfig(
        role, name, service, inbound, tuple(instances), health, tuple(outbounds),
        mesh_outbound=mesh_outbound, protocol=protocol, http=http, admin=admin,
    )  # fmt: skip


def _protocol(r: _Reader, value: Any, path: str) -> str:
    if value not in ("", "http", "tcp"):
        r.fail(path, "must be http or tcp")
        return ""
    return str(value)


def _http(r: _Reader, raw: Any) -> HttpConfig:
    keys = {"headerTimeout", "requestTimeout", "idleTimeout", "upstreamTimeout", "accessLog"}
    doc = r.mapping(raw, "http", keys)
    access_log = None
    if "accessLog" in doc:
        log_doc = r.mapping(doc["accessLog"], "http.accessLog", {"path", "sample", "errors"})
        path = log_doc.get("path", "-")
        if not isinstance(path, str) or not path:
            r.fail("http.accessLog.path", "must be a file path or '-' (standard output)")
            path = "-"
        sample = r.number(log_doc.get("sample", 1.0), "http.accessLog.sample", 0.0)
        if sample > 1.0:
            r.fail("http.accessLog.sample", "must be between 0 and 1")
        errors = log_doc.get("errors", True)
        if not isinstance(errors, bool):
            r.fail("http.accessLog.errors", "must be true or false")
            errors = True
        access_log = AccessLogConfig(path, min(sample, 1.0), errors)
    defaults = HttpConfig()
    return HttpConfig(
        r.number(doc.get("headerTimeout", defaults.header_timeout), "http.headerTimeout", 0.1),
        r.number(doc.get("requestTimeout", defaults.request_timeout), "http.requestTimeout", 0.1),
        r.number(doc.get("idleTimeout", defaults.idle_timeout), "http.idleTimeout", 0.1),
        r.number(doc.get("upstreamTimeout", defaults.upstream_timeout), "http.upstreamTimeout", 0.1),
        access_log,
    )


def _health(r: _Reader, raw: Any) -> HealthCheck:
    doc = r.mapping(raw, "health", {"type", "path", "interval", "timeout", "rise", "fall"})
    kind = doc.get("type", "tcp")
    if kind not in ("tcp", "http"):
        r.fail("health.type", "must be tcp or http")
    path = doc.get("path", "/")
    if not isinstance(path, str) or not path.startswith("/") or any(c in path for c in "\r\n "):
        r.fail("health.path", "must be an absolute path without spaces")
    return HealthCheck(
        kind, path,
        r.number(doc.get("interval", 1.0), "health.interval", 0.05),
        r.number(doc.get("timeout", 1.0), "health.timeout", 0.05),
        int(r.number(doc.get("rise", 2), "health.rise", 1)),
        int(r.number(doc.get("fall", 2), "health.fall", 1)),
    )  # fmt: skip


def load(path: Path, role: str) -> ProxyConfig:
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml  # only when the file is YAML

        raw = yaml.safe_load(text)
    else:
        raw = json.loads(text)
    return parse(raw, role)
