"""Each proxy's configuration, computed from what the zone CP holds. Pure functions.

The output is plain JSON documents (``kind``, ``metadata.name``, ``spec``) that the proxy reads
without the resource model:

- ``Trust/mesh``: the trust domain and root certificates.
- ``Cluster/<service>`` (local proxies): where ``<service>`` can be reached, as ordered
  locality groups: healthy instances in this zone first (their local proxies, directly), then
  the ingresses of the other zones with healthy instances, nearest first.
- ``Route/<service>.<zone>.svc.meshgate`` (ingresses): the local proxies of a service in this
  zone, for connections whose SNI names it.
- For edges (``edge/runtime.py`` reads them): ``Edge/<name>`` (its Edge spec), one
  ``GlobalService/<name>`` per global service with every zone that may serve it, and
  ``Certificate/<secret>`` for the public certificates those services name.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from meshgate.resources.kinds.cross_zone import CrossZoneEndpointsSpec
from meshgate.resources.kinds.dataplane import DataplaneSpec
from meshgate.resources.kinds.edge import EdgeSpec
from meshgate.resources.kinds.global_service import GlobalServiceSpec
from meshgate.resources.kinds.mesh import MeshSpec
from meshgate.resources.kinds.secret import ALL_ZONES, SecretSpec
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
    # What edges need besides (the rest is kept as found; only edges' generation reads it):
    #: this zone's local proxies (edges count their instances)
    dataplanes: tuple[DataplaneSpec, ...] = ()
    #: (address, port) of this zone's ingresses, as their Dataplanes say
    ingresses: tuple[tuple[str, int], ...] = ()
    #: service -> the global CP's table of the zones serving it
    cross: dict[str, CrossZoneEndpointsSpec] = field(default_factory=dict)
    #: Edge resources of this zone, by name
    edges: dict[str, Resource] = field(default_factory=dict)
    #: every GlobalService, by name
    global_services: dict[str, GlobalServiceSpec] = field(default_factory=dict)
    #: tls Secrets meant for this zone: name -> (certificate chain, key) PEM
    certificates: dict[str, tuple[str, str]] = field(default_factory=dict)

    @classmethod
    def of(cls, zone: str, resources: Iterable[Resource], mesh: str = "default") -> ZoneState:
        trust_domain, roots, services = "", [], set()
        protocols: dict[str, str] = {}
        local: dict[str, list[tuple[str, int]]] = defaultdict(list)
        dataplanes: list[DataplaneSpec] = []
        ingresses: list[tuple[str, int]] = []
        edges: dict[str, Resource] = {}
        global_services: dict[str, GlobalServiceSpec] = {}
        certificates: dict[str, tuple[str, str]] = {}
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
                if dp.zone != zone:
                    continue
                if dp.role == "ingress":
                    ingresses.append((dp.address, dp.port))
                    continue
                dataplanes.append(dp)
                for service in {w.service for w in dp.workloads if w.health == "healthy"}:
                    local[service].append((dp.address, dp.port))
            elif r.kind == "GlobalService":
                global_services[r.name] = r.spec_as(GlobalServiceSpec)
            elif r.kind == "Edge":
                if r.spec_as(EdgeSpec).zone == zone:
                    edges[r.name] = r
            elif r.kind == "Secret":
                secret = r.spec_as(SecretSpec)
                if (
                    secret.type == "tls"
                    and (zone in secret.zones or ALL_ZONES in secret.zones)
                    and {"tls.crt", "tls.key"} <= secret.data.keys()
                ):
                    certificates[r.name] = (secret.data["tls.crt"], secret.data["tls.key"])
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
            tuple(dataplanes), tuple(sorted(ingresses)), cross, edges,
            global_services, certificates,
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


def edge(state: ZoneState, name: str) -> dict[str, Doc]:
    """An edge's documents: its Edge spec (when defined for this zone), every global service
    with the zones that may serve it, and the public certificates those services name that
    reached this zone (a service whose certificate did not says ``certificate: null``)."""
    docs = {"Trust/mesh": trust(state)}
    here: dict[str, int] = defaultdict(int)  # service -> healthy instances in this zone
    for dp in state.dataplanes:
        for w in dp.workloads:
            here[w.service] += w.health == "healthy"
    defined = state.edges.get(name)
    if defined is not None:
        docs[f"Edge/{name}"] = _doc("Edge", name, defined.spec_dict())
    for gs_name, gs in sorted(state.global_services.items()):
        certificate = gs.certificate_ref if gs.certificate_ref in state.certificates else None
        if certificate is not None:
            chain, key = state.certificates[certificate]
            docs[f"Certificate/{certificate}"] = _doc(
                "Certificate", certificate, {"certificate": chain, "key": key}
            )
        docs[f"GlobalService/{gs_name}"] = _doc("GlobalService", gs_name, {
            "name": gs_name, "service": gs.service,
            "identity": f"spiffe://{state.trust_domain}/svc/{gs.service}",
            "hostnames": list(gs.hostnames), "vips": list(gs.vips),
            "ports": [{"name": p.name, "port": p.port, "protocol": p.protocol} for p in gs.ports],
            "certificate": certificate, "zones": _serving_zones(state, gs, here),
        })  # fmt: skip
    return docs


def _serving_zones(state: ZoneState, gs: GlobalServiceSpec, here: dict[str, int]) -> list[Doc]:
    """The zones the service names (every zone known to have it when it names none), nearest
    first within a priority. This zone's health and ingresses come from its own Dataplanes,
    fresher than the global CP's table; the others' from that table. Zones with nothing
    healthy or no ingress are listed all the same: the edge reports them."""
    service = gs.service
    table = state.cross.get(service)
    known: dict[str, tuple[int, list[tuple[str, int]]]] = {}
    for entry in table.zones if table is not None else []:
        known[entry.zone] = (entry.healthy, [(i.address, i.port) for i in entry.ingresses])
    if gs.zones:
        wanted = [(p.zone, p.priority, p.weight) for p in gs.zones]
    else:
        names = set(known) | ({state.zone} if service in here else set())
        wanted = [(z, 0, None) for z in names]
    zones = []
    for zone, priority, weight in wanted:
        if zone == state.zone:
            healthy, ingresses = here.get(service, 0), list(state.ingresses)
        else:
            healthy, ingresses = known.get(zone, (0, []))
        km = state.distance.get(zone, math.inf)
        zones.append({
            "zone": zone, "priority": priority, "weight": weight,
            "distance": None if math.isinf(km) else round(km, 1), "healthy": healthy,
            "endpoints": [{"address": a, "port": p, "sni": sni(service, zone)} for a, p in ingresses],
        })  # fmt: skip
    zones.sort(key=lambda z: (z["priority"], math.inf if z["distance"] is None else z["distance"], z["zone"]))
    return zones
