"""Proxy configuration from zone state: locality first, nearest zone next, ingress routes."""

from __future__ import annotations

from typing import Any

import pytest

from meshgate.resources.model import Resource
from tests.support.factories import resource
from zone_cp.proxies import configgen


def dataplane(zone: str, name: str, service: str, health: str, address: str = "10.0.0.1") -> Resource:
    return resource("Dataplane", f"{zone}.{name}", {
        "zone": zone, "role": "local", "address": address, "port": 10001,
        "workloads": [{"service": service, "address": "127.0.0.1", "port": 8080, "health": health}],
    })  # fmt: skip


def zones() -> list[Resource]:
    return [
        resource("Zone", "paris", {"location": {"latitude": 48.86, "longitude": 2.35}}),
        resource("Zone", "frankfurt", {"location": {"latitude": 50.11, "longitude": 8.68}}),
        resource("Zone", "virginia", {"location": {"latitude": 39.04, "longitude": -77.49}}),
        resource("Zone", "nowhere", {}),
        resource("Mesh", "default", {"trustDomain": "mesh.example"}),
        resource("Service", "web", {"ports": [{"name": "http", "port": 8080}]}),
    ]


def cross(service: str, *entries: tuple[str, int, str]) -> Resource:
    return resource("CrossZoneEndpoints", service, {"service": service, "zones": [
        {"zone": z, "healthy": h, "ingresses": [{"address": a, "port": 10002}]} for z, h, a in entries]})  # fmt: skip


def groups(docs: dict[str, Any], service: str) -> list[tuple[str, list[str]]]:
    return [
        (g["zone"], [f"{e['address']}/{e['sni']}" for e in g["endpoints"]])
        for g in docs[f"Cluster/{service}"]["spec"]["groups"]
    ]


def test_local_instances_come_first_then_the_nearest_zone() -> None:
    state = configgen.ZoneState.of("paris", [
        *zones(),
        dataplane("paris", "web-1", "web", "healthy", "10.0.0.1"),
        dataplane("paris", "web-2", "web", "unhealthy", "10.0.0.2"),
        dataplane("frankfurt", "web-3", "web", "healthy", "10.9.9.9"),  # another zone's: not direct
        cross("web", ("virginia", 2, "198.51.100.1"), ("frankfurt", 1, "192.0.2.1"), ("nowhere", 5, "203.0.113.1"),
              ("paris", 1, "192.0.2.99")),
    ])  # fmt: skip
    docs = configgen.local_proxy(state)
    assert groups(docs, "web") == [
        ("paris", ["10.0.0.1/web.paris.svc.meshgate"]),
        ("frankfurt", ["192.0.2.1/web.frankfurt.svc.meshgate"]),
        ("virginia", ["198.51.100.1/web.virginia.svc.meshgate"]),
        ("nowhere", ["203.0.113.1/web.nowhere.svc.meshgate"]),  # unknown distance: last
    ]
    assert docs["Cluster/web"]["spec"]["identity"] == "spiffe://mesh.example/svc/web"
    assert docs["Trust/mesh"]["spec"]["trustDomain"] == "mesh.example"


def test_zones_without_healthy_instances_or_ingresses_are_left_out() -> None:
    state = configgen.ZoneState.of("paris", [
        *zones(),
        dataplane("paris", "web-1", "web", "unhealthy"),
        cross("web", ("frankfurt", 0, "192.0.2.1"), ("virginia", 3, "198.51.100.1")),
    ])  # fmt: skip
    assert groups(configgen.local_proxy(state), "web") == [
        ("virginia", ["198.51.100.1/web.virginia.svc.meshgate"])
    ]


def test_ingress_routes_name_local_healthy_instances_by_sni() -> None:
    state = configgen.ZoneState.of("paris", [
        *zones(),
        dataplane("paris", "web-1", "web", "healthy", "10.0.0.1"),
        dataplane("paris", "web-2", "web", "unhealthy", "10.0.0.2"),
    ])  # fmt: skip
    docs = configgen.ingress(state)
    assert set(docs) == {"Trust/mesh", "Route/web.paris.svc.meshgate"}
    assert docs["Route/web.paris.svc.meshgate"]["spec"]["endpoints"] == [
        {"address": "10.0.0.1", "port": 10001}
    ]


def test_a_cluster_carries_its_service_protocol_and_the_proxy_reads_it() -> None:
    from zones.runtime import BadConfig, build

    state = configgen.ZoneState.of("paris", [
        *zones(),
        resource("Service", "api", {"ports": [{"name": "web", "port": 80, "protocol": "http"}]}),
    ])  # fmt: skip
    docs = configgen.local_proxy(state)
    docs["Trust/mesh"]["spec"]["roots"] = ["-----BEGIN CERTIFICATE-----"]  # no MeshCA in this state
    assert docs["Cluster/api"]["spec"]["protocol"] == "http"
    assert docs["Cluster/web"]["spec"]["protocol"] == "tcp"  # the port's default
    runtime = build(1, docs)
    assert runtime.clusters["api"].protocol == "http"
    docs["Cluster/api"]["spec"]["protocol"] = "grpc"
    with pytest.raises(BadConfig, match="protocol must be http or tcp"):
        build(2, docs)
