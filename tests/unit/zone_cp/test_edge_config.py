"""An edge's configuration from zone state: its Edge, every global service with the zones that
may serve it (this zone from its own Dataplanes, the others from the cross-zone table), and the
public certificates that reached the zone; all of it accepted by the edge's own reader."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from functools import cache
from typing import Any

import pytest

from edge.runtime import build
from meshgate.demo.resources import public_certificate
from meshgate.resources.model import Resource
from tests.support.factories import resource
from zone_cp.proxies import configgen
from zone_cp.proxies.hub import INPUTS, ProxyIdentity
from zones.runtime import BadConfig

TD = "mesh.example"


@cache
def tls_pair() -> tuple[str, str]:
    return public_certificate(datetime.now(UTC))


def base() -> list[Resource]:
    cert, _key = tls_pair()
    fingerprint = "sha256:" + hashlib.sha256(cert.encode()).hexdigest()
    return [
        resource("Mesh", "default", {"trustDomain": TD}),
        resource("MeshCA", "default", {"certificate": cert, "fingerprint": fingerprint}),
        resource("Zone", "paris", {"location": {"latitude": 48.86, "longitude": 2.35}}),
        resource("Zone", "frankfurt", {"location": {"latitude": 50.11, "longitude": 8.68}}),
        resource("Zone", "virginia", {"location": {"latitude": 39.04, "longitude": -77.49}}),
        resource("Zone", "nowhere", {}),
        resource("Service", "web", {"ports": [{"name": "http", "port": 8080, "protocol": "http"}]}),
    ]


def local(zone: str, name: str, service: str, *healths: str, address: str = "10.0.0.1") -> Resource:
    return resource("Dataplane", f"{zone}.{name}", {
        "zone": zone, "role": "local", "address": address, "port": 10001,
        "workloads": [{"service": service, "address": "127.0.0.1", "port": 8080 + i, "health": h}
                      for i, h in enumerate(healths)],
    })  # fmt: skip


def ingress(zone: str, name: str, address: str, port: int = 10002) -> Resource:
    return resource(
        "Dataplane", f"{zone}.{name}", {"zone": zone, "role": "ingress", "address": address, "port": port}
    )


def cross(service: str, *entries: tuple[str, int, list[str]]) -> Resource:
    return resource("CrossZoneEndpoints", service, {"service": service, "zones": [
        {"zone": z, "healthy": h, "ingresses": [{"address": a, "port": 10002} for a in addresses]}
        for z, h, addresses in entries]})  # fmt: skip


def global_service(name: str, **spec: Any) -> Resource:
    return resource("GlobalService", name, {
        "service": "web", "hostnames": ["www.example.com"], "vips": ["203.0.113.10"],
        "ports": [{"name": "http", "port": 80, "protocol": "http", "targetPort": "http"}], **spec,
    })  # fmt: skip


def edge_resource(name: str, zone: str, **spec: Any) -> Resource:
    return resource("Edge", name, {"zone": zone, "bgp": {
        "localASN": 65001, "routerID": "10.0.0.1", "neighbors": [{"address": "10.0.0.254", "peerASN": 65000}]},
        **spec})  # fmt: skip


def tls_secret(name: str, zones: list[str]) -> Resource:
    cert, key = tls_pair()
    return resource(
        "Secret", name, {"type": "tls", "data": {"tls.crt": cert, "tls.key": key}, "zones": zones}
    )


def docs_for(*extra: Resource, zone: str = "paris", name: str = "edge-1") -> dict[str, Any]:
    return configgen.edge(configgen.ZoneState.of(zone, [*base(), *extra]), name)


def summary(docs: dict[str, Any], gs: str = "web") -> list[tuple[Any, ...]]:
    return [
        (z["zone"], z["priority"], z["weight"], z["healthy"], [f"{e['address']}:{e['port']}/{e['sni']}" for e in z["endpoints"]])
        for z in docs[f"GlobalService/{gs}"]["spec"]["zones"]
    ]  # fmt: skip


def test_this_zone_comes_from_its_own_dataplanes_and_the_others_from_the_cross_zone_table() -> None:
    docs = docs_for(
        global_service("web"),
        local("paris", "web-1", "web", "healthy", "healthy", "unhealthy"),
        local("paris", "web-2", "web", "healthy", address="10.0.0.2"),
        local("frankfurt", "web-3", "web", "healthy"),  # another zone's own report: not read here
        ingress("paris", "in-2", "192.0.2.12"),
        ingress("paris", "in-1", "192.0.2.11"),
        ingress("frankfurt", "in-9", "192.0.2.99"),
        # The table's view of paris is older than paris's own Dataplanes: not used.
        cross("web", ("paris", 9, ["198.18.0.1"]), ("frankfurt", 2, ["192.0.2.21"]),
              ("virginia", 0, ["198.51.100.1"]), ("nowhere", 4, [])),
    )  # fmt: skip
    assert summary(docs) == [
        ("paris", 0, None, 3, ["192.0.2.11:10002/web.paris.svc.meshgate", "192.0.2.12:10002/web.paris.svc.meshgate"]),
        ("frankfurt", 0, None, 2, ["192.0.2.21:10002/web.frankfurt.svc.meshgate"]),
        ("virginia", 0, None, 0, ["198.51.100.1:10002/web.virginia.svc.meshgate"]),  # none healthy: listed
        ("nowhere", 0, None, 4, []),  # no ingress, unknown distance: listed, last
    ]  # fmt: skip
    spec = docs["GlobalService/web"]["spec"]
    assert spec == {
        "name": "web", "service": "web", "identity": f"spiffe://{TD}/svc/web",
        "hostnames": ["www.example.com"], "vips": ["203.0.113.10"],
        "ports": [{"name": "http", "port": 80, "protocol": "http"}], "certificate": None,
        "zones": spec["zones"],
    }  # fmt: skip
    distances = {z["zone"]: z["distance"] for z in spec["zones"]}
    assert distances["paris"] == 0.0
    assert distances["frankfurt"] == pytest.approx(479, abs=5)
    assert distances["virginia"] == pytest.approx(6200, abs=100)
    assert distances["nowhere"] is None


def test_with_no_zones_listed_every_zone_known_to_have_the_service_is_listed() -> None:
    # Only unhealthy instances here: paris still has the service.
    docs = docs_for(global_service("web"), local("paris", "web-1", "web", "unhealthy"),
                    cross("web", ("virginia", 1, ["198.51.100.1"])))  # fmt: skip
    assert [(z, h) for z, _p, _w, h, _e in summary(docs)] == [("paris", 0), ("virginia", 1)]
    # Nothing here and the table does not name paris: paris is not a zone of this service.
    docs = docs_for(global_service("web"), cross("web", ("virginia", 1, ["198.51.100.1"])))
    assert [z for z, *_ in summary(docs)] == ["virginia"]
    assert [z for z, *_ in summary(docs_for(global_service("web")))] == []


def test_listed_zones_are_exactly_those_with_their_priority_and_weight() -> None:
    zones = [
        {"zone": "virginia", "priority": 0, "weight": 30},
        {"zone": "frankfurt", "priority": 0, "weight": 70},
        {"zone": "paris", "priority": 1},
    ]
    docs = docs_for(
        global_service("web", zones=zones),
        local("paris", "web-1", "web", "healthy"),
        ingress("paris", "in-1", "192.0.2.11"),
        cross("web", ("virginia", 2, ["198.51.100.1"]), ("nowhere", 5, ["203.0.113.1"])),
    )
    assert summary(docs) == [
        ("frankfurt", 0, 70, 0, []),  # listed, unknown to the table: 0 healthy, no endpoints
        ("virginia", 0, 30, 2, ["198.51.100.1:10002/web.virginia.svc.meshgate"]),
        ("paris", 1, None, 1, ["192.0.2.11:10002/web.paris.svc.meshgate"]),
    ]  # "nowhere" has the service but is not listed: left out


def test_edge_document_is_its_own_edge_of_this_zone_only() -> None:
    drain = {"reason": "maintenance", "requestedAt": "2026-01-31T12:00:00Z", "signals": ["as-path-prepend"]}
    mine = edge_resource("edge-1", "paris", drain=drain)
    docs = docs_for(mine, edge_resource("edge-2", "paris"))
    assert docs["Edge/edge-1"] == {"kind": "Edge", "metadata": {"name": "edge-1"}, "spec": mine.spec_dict()}
    assert docs["Edge/edge-1"]["spec"]["bgp"]["localASN"] == 65001
    assert docs["Edge/edge-1"]["spec"]["drain"] == drain
    assert "Edge/edge-2" not in docs
    assert "Edge/edge-1" not in docs_for(edge_resource("edge-1", "frankfurt"))  # defined for another zone
    assert set(docs_for()) == {"Trust/mesh"}  # not defined yet: trust only


def test_certificates_present_absent_and_not_meant_for_this_zone() -> None:
    https = [{"name": "https", "port": 443, "protocol": "https", "targetPort": "http"}]
    docs = docs_for(
        global_service("shop", ports=https, certificateRef="shop-tls"),
        global_service("blog", vips=["203.0.113.11"], ports=https, certificateRef="blog-tls"),
        global_service("api", vips=["203.0.113.12"], ports=https, certificateRef="api-tls"),
        global_service("also-shop", vips=["203.0.113.13"], ports=https, certificateRef="shop-tls"),
        tls_secret("shop-tls", ["paris"]),
        tls_secret("api-tls", ["virginia"]),  # meant for another zone only
        tls_secret("unused-tls", ["*"]),  # meant for every zone, named by no service
        # blog-tls never reached this zone
    )
    cert, key = tls_pair()
    assert docs["Certificate/shop-tls"]["spec"] == {"certificate": cert, "key": key}
    assert {k for k in docs if k.startswith("Certificate/")} == {"Certificate/shop-tls"}
    certificates = {k: d["spec"]["certificate"] for k, d in docs.items() if k.startswith("GlobalService/")}
    assert certificates == {
        "GlobalService/shop": "shop-tls", "GlobalService/also-shop": "shop-tls",
        "GlobalService/blog": None, "GlobalService/api": None,
    }  # fmt: skip
    everywhere = docs_for(
        global_service("shop", ports=https, certificateRef="shop-tls"), tls_secret("shop-tls", ["*"])
    )
    assert everywhere["GlobalService/shop"]["spec"]["certificate"] == "shop-tls"
    assert "Certificate/shop-tls" in everywhere


def test_the_edge_reads_what_is_generated_for_it() -> None:
    https = [{"name": "https", "port": 443, "protocol": "https", "targetPort": "http"},
             {"name": "ssh", "port": 22, "protocol": "tcp", "targetPort": "http"}]  # fmt: skip
    state = configgen.ZoneState.of("paris", [
        *base(),
        edge_resource("edge-1", "paris"),
        global_service("web", ports=https, certificateRef="web-tls",
                       zones=[{"zone": "paris", "priority": 0}, {"zone": "frankfurt", "priority": 1}]),
        global_service("nocert", vips=["2001:db8::10"], ports=https, certificateRef="missing"),
        tls_secret("web-tls", ["paris"]),
        local("paris", "web-1", "web", "healthy"),
        ingress("paris", "in-1", "192.0.2.11"),
        cross("web", ("frankfurt", 3, ["192.0.2.21"])),
    ])  # fmt: skip
    docs = ProxyIdentity("edge", f"spiffe://{TD}/zone/paris/edge/edge-1", name="edge-1").generate(state)
    assert docs == configgen.edge(state, "edge-1")
    runtime = build(7, docs)
    assert runtime.version == 7
    assert runtime.trust_domain == TD
    assert runtime.edge is not None
    assert runtime.edge["bgp"]["routerID"] == "10.0.0.1"
    web = runtime.services["web"]
    assert web.certificate == "web-tls"
    assert runtime.certificates["web-tls"].chain_pem == tls_pair()[0]
    assert [(z.zone, z.priority, z.healthy, len(z.endpoints)) for z in web.zones] == [
        ("paris", 0, 1, 1),
        ("frankfurt", 1, 3, 1),
    ]
    assert web.zones[1].distance == pytest.approx(479, abs=5)
    assert runtime.services["nocert"].certificate is None
    assert runtime.services["nocert"].vips == ("2001:db8::10",)
    # What the edge refuses, so that never generating it matters: a dangling certificate name.
    docs["GlobalService/nocert"]["spec"]["certificate"] = "missing"
    with pytest.raises(BadConfig, match="certificate 'missing' was not sent"):
        build(8, docs)


def test_what_edges_need_recomputes_every_configuration_and_proxies_get_none_of_it() -> None:
    assert {"Edge", "GlobalService", "Secret"} <= INPUTS
    state = configgen.ZoneState.of("paris", [
        *base(), edge_resource("edge-1", "paris"), global_service("web"), tls_secret("web-tls", ["paris"]),
    ])  # fmt: skip
    assert set(configgen.local_proxy(state)) == {"Trust/mesh", "Cluster/web"}
    assert set(configgen.ingress(state)) == {"Trust/mesh"}
