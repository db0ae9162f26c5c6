"""The configuration a proxy runs with, read from the documents its zone CP sends.

Every document is checked; anything unexpected makes the whole update fail (a NACK), so a
proxy never runs half of a configuration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class BadConfig(ValueError):
    pass


@dataclass(frozen=True)
class Target:
    address: str
    port: int
    sni: str = ""


@dataclass(frozen=True)
class Group:
    zone: str
    endpoints: tuple[Target, ...]


@dataclass(frozen=True)
class ClusterConfig:
    service: str
    identity: str  # the SPIFFE ID every endpoint must present
    groups: tuple[Group, ...]  # locality order: the first group with a usable endpoint serves
    protocol: str = "tcp"  # http: requests are proxied by the HTTP engine; tcp: bytes are relayed


@dataclass(frozen=True)
class RouteConfig:
    sni: str
    service: str
    endpoints: tuple[Target, ...]


@dataclass(frozen=True)
class Runtime:
    version: int = 0
    trust_domain: str = ""
    roots: tuple[str, ...] = ()
    clusters: dict[str, ClusterConfig] = field(default_factory=dict)
    routes: dict[str, RouteConfig] = field(default_factory=dict)


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise BadConfig(f"{what} must be a non-empty string")
    return value


def _target(value: Any, what: str, sni: bool) -> Target:
    if not isinstance(value, dict):
        raise BadConfig(f"{what} must be an object")
    port = value.get("port")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise BadConfig(f"{what}.port must be a port number")
    return Target(
        _str(value.get("address"), f"{what}.address"),
        port,
        _str(value.get("sni"), f"{what}.sni") if sni else "",
    )


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise BadConfig(f"{what} must be a list")
    return value


def build(version: int, documents: dict[str, dict[str, Any]]) -> Runtime:
    trust_domain, roots = "", tuple[str, ...]()
    clusters: dict[str, ClusterConfig] = {}
    routes: dict[str, RouteConfig] = {}
    for key, doc in documents.items():
        kind, spec = doc.get("kind"), doc.get("spec")
        if not isinstance(spec, dict):
            raise BadConfig(f"{key}: spec must be an object")
        if kind == "Trust":
            trust_domain = _str(spec.get("trustDomain"), f"{key}.trustDomain")
            roots = tuple(_str(r, f"{key}.roots[]") for r in _list(spec.get("roots"), f"{key}.roots"))
        elif kind == "Cluster":
            groups = tuple(
                Group(_str(g.get("zone"), f"{key}.groups[].zone"),
                      tuple(_target(e, f"{key}.endpoints[]", True) for e in _list(g.get("endpoints"), f"{key}.endpoints")))
                for g in _list(spec.get("groups"), f"{key}.groups") if isinstance(g, dict)
            )  # fmt: skip
            service = _str(spec.get("service"), f"{key}.service")
            protocol = spec.get("protocol", "tcp")
            if protocol not in ("http", "tcp"):
                raise BadConfig(f"{key}.protocol must be http or tcp")
            clusters[service] = ClusterConfig(
                service, _str(spec.get("identity"), f"{key}.identity"), groups, protocol
            )
        elif kind == "Route":
            sni = _str(spec.get("sni"), f"{key}.sni")
            endpoints = tuple(
                _target(e, f"{key}.endpoints[]", False)
                for e in _list(spec.get("endpoints"), f"{key}.endpoints")
            )
            routes[sni] = RouteConfig(sni, _str(spec.get("service"), f"{key}.service"), endpoints)
        else:
            raise BadConfig(f"{key}: unknown kind {kind!r} (is the zone CP newer than this proxy?)")
    if not trust_domain or not roots:
        raise BadConfig("Trust/mesh is missing: no trust domain or roots")
    return Runtime(version, trust_domain, roots, clusters, routes)
