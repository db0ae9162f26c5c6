"""The configuration an edge runs with, read from the documents its zone CP sends.

Documents (``kind``, ``metadata.name``, ``spec``), all checked; anything unexpected refuses the
whole update (a NACK), so an edge never runs half of a configuration:

- ``Trust/mesh``: ``{trustDomain, roots}``, as for proxies.
- ``Edge/<name>``: this edge's ``Edge`` spec as applied at the global CP (``zone``, ``bgp``,
  ``drain``). Absent until an operator defines the Edge: the edge then serves but announces
  nothing.
- ``GlobalService/<name>``: one public service: ``service``, ``identity`` (the SPIFFE ID zone
  endpoints must present), ``hostnames``, ``vips``, ``ports`` (``name``, ``port``, ``protocol``:
  http, https, tcp or tls-passthrough), ``certificate`` (a ``Certificate`` document's name, for
  https) and ``zones``: every zone that may serve it, each with ``priority`` (lowest serves
  first), ``weight`` (null or 1-1000), ``distance`` (km from this edge's zone, null when
  unknown), ``healthy`` (instances) and ``endpoints`` (its ingresses: ``address``, ``port``,
  ``sni`` = ``<service>.<zone>.svc.meshgate``).
- ``Certificate/<secret>``: ``{certificate, key}`` PEM from a ``Secret`` of type tls.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from meshgate.pki.spiffe import SpiffeId
from zones.runtime import BadConfig

PROTOCOLS = ("http", "https", "tcp", "tls-passthrough")


@dataclass(frozen=True)
class ZoneEndpoint:
    address: str
    port: int
    sni: str


@dataclass(frozen=True)
class ServingZone:
    zone: str
    priority: int
    weight: int | None
    distance: float | None
    healthy: int
    endpoints: tuple[ZoneEndpoint, ...]


@dataclass(frozen=True)
class PublicPort:
    name: str
    port: int
    protocol: str


@dataclass(frozen=True)
class GlobalService:
    name: str
    service: str
    identity: str
    hostnames: tuple[str, ...]
    vips: tuple[str, ...]
    ports: tuple[PublicPort, ...]
    certificate: str | None
    zones: tuple[ServingZone, ...]


@dataclass(frozen=True)
class Certificate:
    name: str
    chain_pem: str
    key_pem: str


@dataclass(frozen=True)
class EdgeRuntime:
    version: int = 0
    trust_domain: str = ""
    roots: tuple[str, ...] = ()
    #: the Edge resource's spec (``bgp``, ``drain``), None while no Edge is defined
    edge: dict[str, Any] | None = None
    services: dict[str, GlobalService] = field(default_factory=dict)
    certificates: dict[str, Certificate] = field(default_factory=dict)

    @property
    def drain(self) -> dict[str, Any] | None:
        return None if self.edge is None else self.edge.get("drain")


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise BadConfig(f"{what} must be a non-empty string")
    return value


def _int(value: Any, what: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise BadConfig(f"{what} must be an integer from {low} to {high}")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise BadConfig(f"{what} must be a list")
    return value


def _dict(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadConfig(f"{what} must be an object")
    return value


def _ip(value: Any, what: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except (TypeError, ValueError):
        raise BadConfig(f"{what} must be an IP address") from None


def _zone(value: Any, what: str) -> ServingZone:
    doc = _dict(value, what)
    weight = doc.get("weight")
    distance = doc.get("distance")
    if distance is not None and (not isinstance(distance, int | float) or isinstance(distance, bool)):
        raise BadConfig(f"{what}.distance must be a number or null")
    endpoints: list[ZoneEndpoint] = []
    for i, raw in enumerate(_list(doc.get("endpoints", []), f"{what}.endpoints")):
        e = _dict(raw, f"{what}.endpoints[{i}]")
        endpoint = ZoneEndpoint(
            _ip(e.get("address"), f"{what}.endpoints[{i}].address"),
            _int(e.get("port"), f"{what}.endpoints[{i}].port", 1, 65535),
            _str(e.get("sni"), f"{what}.endpoints[{i}].sni"),
        )
        if any((x.address, x.port) == (endpoint.address, endpoint.port) for x in endpoints):
            # a zone's ingresses become one cluster, which refuses an address twice
            raise BadConfig(f"{what}.endpoints[{i}] repeats {endpoint.address}:{endpoint.port}")
        endpoints.append(endpoint)
    return ServingZone(
        _str(doc.get("zone"), f"{what}.zone"),
        _int(doc.get("priority", 0), f"{what}.priority", 0, 1000),
        None if weight is None else _int(weight, f"{what}.weight", 1, 1000),
        None if distance is None else float(distance),
        _int(doc.get("healthy", 0), f"{what}.healthy", 0, 1 << 31),
        tuple(endpoints),
    )


def _service(key: str, spec: dict[str, Any]) -> GlobalService:
    ports = []
    for i, raw in enumerate(_list(spec.get("ports"), f"{key}.ports")):
        port = _dict(raw, f"{key}.ports[{i}]")
        protocol = port.get("protocol")
        if protocol not in PROTOCOLS:
            raise BadConfig(f"{key}.ports[{i}].protocol must be one of {', '.join(PROTOCOLS)}")
        ports.append(
            PublicPort(
                _str(port.get("name"), f"{key}.ports[{i}].name"),
                _int(port.get("port"), f"{key}.ports[{i}].port", 1, 65535),
                protocol,
            )
        )
    certificate = spec.get("certificate")
    if certificate is not None:
        certificate = _str(certificate, f"{key}.certificate")
    identity = _str(spec.get("identity"), f"{key}.identity")
    try:
        SpiffeId.parse(identity)  # the zones' ingresses must present it (checked at each connect)
    except ValueError as exc:
        raise BadConfig(f"{key}.identity must be a SPIFFE ID: {exc}") from None
    return GlobalService(
        _str(spec.get("name"), f"{key}.name"),
        _str(spec.get("service"), f"{key}.service"),
        identity,
        tuple(
            _str(h, f"{key}.hostnames[]").lower()
            for h in _list(spec.get("hostnames", []), f"{key}.hostnames")
        ),
        tuple(_ip(v, f"{key}.vips[{i}]") for i, v in enumerate(_list(spec.get("vips"), f"{key}.vips"))),
        tuple(ports),
        certificate,
        tuple(
            _zone(z, f"{key}.zones[{i}]") for i, z in enumerate(_list(spec.get("zones", []), f"{key}.zones"))
        ),
    )


def build(version: int, documents: dict[str, dict[str, Any]]) -> EdgeRuntime:
    trust_domain, roots = "", tuple[str, ...]()
    edge: dict[str, Any] | None = None
    services: dict[str, GlobalService] = {}
    certificates: dict[str, Certificate] = {}
    for key, doc in documents.items():
        kind, spec = doc.get("kind"), doc.get("spec")
        if not isinstance(spec, dict):
            raise BadConfig(f"{key}: spec must be an object")
        if kind == "Trust":
            trust_domain = _str(spec.get("trustDomain"), f"{key}.trustDomain")
            roots = tuple(_str(r, f"{key}.roots[]") for r in _list(spec.get("roots"), f"{key}.roots"))
        elif kind == "Edge":
            _dict(spec.get("bgp"), f"{key}.bgp")
            if spec.get("drain") is not None:
                _dict(spec["drain"], f"{key}.drain")
            edge = spec
        elif kind == "GlobalService":
            service = _service(key, spec)
            services[service.name] = service
        elif kind == "Certificate":
            name = _str(_dict(doc.get("metadata", {}), f"{key}.metadata").get("name"), f"{key}.metadata.name")
            certificates[name] = Certificate(
                name, _str(spec.get("certificate"), f"{key}.certificate"), _str(spec.get("key"), f"{key}.key")
            )
        else:
            raise BadConfig(f"{key}: unknown kind {kind!r} (is the zone CP newer than this edge?)")
    if not trust_domain or not roots:
        raise BadConfig("Trust/mesh is missing: no trust domain or roots")
    for service in services.values():
        if service.certificate is not None and service.certificate not in certificates:
            raise BadConfig(f"GlobalService/{service.name}: certificate {service.certificate!r} was not sent")
    return EdgeRuntime(version, trust_domain, roots, edge, services, certificates)
