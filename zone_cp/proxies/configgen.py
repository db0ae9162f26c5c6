"""Each proxy's configuration, computed from what the zone CP holds. Pure functions.

The output is plain JSON documents (``kind``, ``metadata.name``, ``spec``) that the proxy reads
without the resource model:

- ``Trust/mesh``: the trust domain and root certificates.
- ``Cluster/<service>`` (local proxies): where ``<service>`` can be reached, as ordered
  locality groups: healthy instances in this zone first (their local proxies, directly), then
  the ingresses of the other zones with healthy instances, nearest first.
- ``Route/<service>.<zone>.svc.meshgate`` (ingresses): the local proxies of a service in this
  zone, for connections whose SNI names it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from meshgate.resources.kinds.cross_zone import CrossZoneEndpointsSpec
from meshgate.resources.kinds.dataplane import DataplaneSpec
from meshgate.resources.kinds.mesh import MeshSpec
from meshgate.resources.kinds.service import ServiceSpec
from meshgate.resources.kinds.system import MeshCASpec
from meshgate.resources.kinds.zone import ZoneSpec
from meshgate.resources.model import Resource

Doc = dict[str, Any]


def sni(service: str, zone: str) -> str:
    return f"{service}.{zone}.svc.meshgate"


@dataclass(frozen=True)
class ZoneState:
    """The parts of the zone's store proxy configuration depends on."""

    zone: str
    trust_domain: str
    roots: tuple[str, ...]
    services: frozenset[str]
    local: dict[
        str, list[tuple[str, int]]
    ]  # service -> (address, port) of local proxies with healthy instances
    remote: dict[str, list[tuple[str, list[tuple[str, int]]]]]  # service -> [(zone, ingresses)]
    distance: dict[str, float]  # zone -> distance from this zone (km; inf when unknown)
    #: service -> the protocol of its first port (http or tcp): how local proxies carry it
    protocols: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, zone: str, resources: Iterable[Resource], mesh: str = "default") -> ZoneState:
        trust_domain, roots, services = "", [], set()
        protocols: dict[str, str] = {}
        local: dict[str, list[tuple[str, int]]] = defaultdict(list)
        cross: dict[str, CrossZoneEndpointsSpec] = {}
        locations: dict[str, tuple[float, float] | None] = {}
        for r in resources:
            if r.kind == "Mesh" and r.name == mesh:
                trust_domain = r.spec_as(MeshSpec).trust_domain
            elif r.kind == "MeshCA" and r.name == mesh:
                roots.append(r.spec_as(MeshCASpec).certificate)
            elif r.kind == "Service":
                services.add(r.name)
                protocols[r.name] = r.spec_as(ServiceSpec).ports[0].protocol
            elif r.kind == "Zone":
                location = r.spec_as(ZoneSpec).location
                locations[r.name] = (location.latitude, location.longitude) if location else None
            elif r.kind == "CrossZoneEndpoints":
                spec = r.spec_as(CrossZoneEndpointsSpec)
                cross[spec.service] = spec
            elif r.kind == "Dataplane":
                dp = r.spec_as(DataplaneSpec)
                if dp.zone != zone or dp.role != "local":
                    continue
                for service in {w.service for w in dp.workloads if w.health == "healthy"}:
                    local[service].append((dp.address, dp.port))
        distance = {z: _km(locations.get(zone), loc) for z, loc in locations.items()}
        remote = {
            service: [
                (z.zone, [(i.address, i.port) for i in z.ingresses])
                for z in sorted(spec.zones, key=lambda z: (distance.get(z.zone, math.inf), z.zone))
                if z.zone != zone and z.healthy > 0 and z.ingresses
            ]
            for service, spec in cross.items()
        }
        return cls(
            zone, trust_domain, tuple(roots), frozenset(services),
            {s: sorted(e) for s, e in local.items()}, remote, distance, protocols,
        )  # fmt: skip


def _km(a: tuple[float, float] | None, b: tuple[float, float] | None) -> float:
    """Great-circle distance; unknown locations sort after known ones."""
    if a is None or b is None:
        return math.inf
    (lat1, lon1), (lat2, lon2) = (tuple(map(math.radians, p)) for p in (a, b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(h))


def _doc(kind: str, name: str, spec: Doc) -> Doc:
    return {"kind": kind, "metadata": {"name": name}, "spec": spec}


def trust(state: ZoneState) -> Doc:
    return _doc("Trust", "mesh", {"trustDomain": state.trust_domain, "roots": list(state.roots)})


def cluster(state: ZoneState, service: str) -> Doc:
    groups = []
    local = state.local.get(service, [])
    if local:
        groups.append({"zone": state.zone, "endpoints": [
            {"address": a, "port": p, "sni": sni(service, state.zone)} for a, p in local]})  # fmt: skip
    for zone, ingresses in state.remote.get(service, []):
        groups.append({"zone": zone, "endpoints": [
            {"address": a, "port": p, "sni": sni(service, zone)} for a, p in ingresses]})  # fmt: skip
    identity = f"spiffe://{state.trust_domain}/svc/{service}"
    protocol = state.protocols.get(service, "tcp")
    return _doc(
        "Cluster", service, {"service": service, "identity": identity, "protocol": protocol, "groups": groups}
    )


def local_proxy(state: ZoneState) -> dict[str, Doc]:
    docs = {"Trust/mesh": trust(state)}
    for service in sorted(state.services):
        docs[f"Cluster/{service}"] = cluster(state, service)
    return docs


def ingress(state: ZoneState) -> dict[str, Doc]:
    docs = {"Trust/mesh": trust(state)}
    for service, endpoints in sorted(state.local.items()):
        name = sni(service, state.zone)
        docs[f"Route/{name}"] = _doc("Route", name, {
            "sni": name, "service": service,
            "endpoints": [{"address": a, "port": p} for a, p in endpoints]})  # fmt: skip
    return docs
