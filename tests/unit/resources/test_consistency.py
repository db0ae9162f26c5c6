"""Rules across resources, checked against the state an apply would leave behind."""

from __future__ import annotations

from meshgate.resources.consistency import Change, cascade, check
from meshgate.resources.model import Resource
from tests.support.factories import resource, service, zone


def global_service(name: str, vip: str = "203.0.113.10", port: int = 80, **extra: object) -> Resource:
    spec = {
        "service": "web",
        "hostnames": ["www.example.com"],
        "vips": [vip],
        "ports": [{"name": "http", "port": port, "protocol": "http", "targetPort": "http"}],
        **extra,
    }
    return resource("GlobalService", name, spec)


def state(*resources: Resource) -> dict[tuple[str, str], Resource]:
    return {r.key: r for r in resources}


def puts(*resources: Resource) -> list[Change]:
    return [Change(i, r.key, r) for i, r in enumerate(resources)]


def messages(changes: list[Change], current: dict[tuple[str, str], Resource]) -> list[str]:
    return [str(v) for v in check(changes, current)]


def test_references_must_resolve() -> None:
    gs = global_service("web", zones=[{"zone": "mars"}], certificateRef="nope")
    assert messages(puts(gs), state()) == [
        "document 0 (GlobalService/web): spec.certificateRef: Secret 'nope' does not exist",
        "document 0 (GlobalService/web): spec.service: Service 'web' does not exist",
        "document 0 (GlobalService/web): spec.zones[0].zone: Zone 'mars' does not exist",
    ]


def test_references_resolve_within_the_same_apply() -> None:
    assert (
        messages(puts(zone("mars"), service("web"), global_service("web", zones=[{"zone": "mars"}])), state())
        == []
    )


def test_target_port_must_name_a_port_of_the_service() -> None:
    gs = global_service("web")
    gs_bad = resource(
        "GlobalService",
        "web",
        {**gs.spec_dict(), "ports": [{"name": "http", "port": 80, "protocol": "http", "targetPort": "grpc"}]},
    )
    assert messages(puts(gs_bad), state(service("web"))) == [
        "document 0 (GlobalService/web): spec.ports[0].targetPort: "
        "Service 'web' has no port named 'grpc' (it has: http)"
    ]


def test_a_change_elsewhere_that_breaks_a_resource_is_refused() -> None:
    renamed = resource("Service", "web", {"ports": [{"name": "grpc", "port": 9090}]})
    assert messages(puts(renamed), state(service("web"), global_service("web"))) == [
        "document 0 (Service/web): would break GlobalService/web: spec.ports[0].targetPort: "
        "Service 'web' has no port named 'http' (it has: grpc)"
    ]


def test_delete_refused_while_referenced() -> None:
    current = state(zone("eu"), service("web"), global_service("web", zones=[{"zone": "eu"}]))
    assert messages([Change(0, ("Zone", "eu"), None)], current) == [
        "document 0 (Zone/eu): still referenced by GlobalService/web (spec.zones[0].zone)"
    ]
    assert (
        messages([Change(0, ("Zone", "eu"), None), Change(1, ("GlobalService", "web"), None)], current) == []
    )


def test_certificate_must_be_a_tls_secret() -> None:
    opaque = resource("Secret", "cert", {"type": "opaque", "data": {}})
    gs = global_service("web", certificateRef="cert")
    assert messages(puts(gs), state(service("web"), opaque)) == [
        "document 0 (GlobalService/web): spec.certificateRef: Secret 'cert' is not of type tls"
    ]


def test_vip_and_port_cannot_be_shared_between_global_services() -> None:
    current = state(service("web"), global_service("web"))
    clash = global_service("shop", vip="203.0.113.10", port=80)
    assert messages(puts(clash), current) == [
        "document 0 (GlobalService/shop): spec.vips[0]: 203.0.113.10 port 80 is already used by GlobalService/web"
    ]
    assert messages(puts(global_service("shop", vip="203.0.113.10", port=8080)), current) == []
    assert messages(puts(global_service("shop", vip="203.0.113.11", port=80)), current) == []
    # Rewriting the same service is not a clash with itself.
    assert messages(puts(global_service("web")), current) == []


def test_trust_domain_cannot_change() -> None:
    old = resource("Mesh", "default", {"trustDomain": "a.example"})
    new = resource("Mesh", "default", {"trustDomain": "b.example"})
    assert messages(puts(new), state(old)) == [
        "document 0 (Mesh/default): spec.trustDomain: cannot change after creation "
        "(it is 'a.example'); delete and recreate to change it"
    ]


def test_zone_reported_resources_go_with_their_zone() -> None:
    dp = resource(
        "Dataplane", "eu.web-1", {"zone": "eu", "role": "local", "address": "10.0.0.1", "port": 10001}
    )
    other = resource(
        "Dataplane", "us.web-1", {"zone": "us", "role": "local", "address": "10.0.0.2", "port": 10001}
    )
    insight = resource("ZoneInsight", "eu", {"zone": "eu"})
    current = state(zone("eu"), zone("us"), dp, other, insight)
    assert cascade([("Zone", "eu")], current) == [("Dataplane", "eu.web-1"), ("ZoneInsight", "eu")]


def test_a_byte_relaying_port_must_target_a_tcp_port() -> None:
    # tls-passthrough onto an http port: the client's TLS would reach an HTTP engine (400).
    web = resource(
        "Service", "web", {"ports": [{"name": "http", "port": 8080, "protocol": "http"},
                                     {"name": "tls", "port": 8443, "protocol": "tcp"}]},
    )  # fmt: skip
    ports = [
        {"name": "http", "port": 80, "protocol": "http", "targetPort": "http"},
        {"name": "raw", "port": 443, "protocol": "tls-passthrough", "targetPort": "http"},
        {"name": "ssh", "port": 2222, "protocol": "tcp", "targetPort": "http"},
        {"name": "ok", "port": 8443, "protocol": "tls-passthrough", "targetPort": "tls"},
    ]
    gs = resource("GlobalService", "web", {**global_service("web").spec_dict(), "ports": ports})
    assert messages(puts(gs), state(web)) == [
        "document 0 (GlobalService/web): spec.ports[1].targetPort: a tls-passthrough port relays "
        "bytes as they come, but port 'http' of Service 'web' is http (its local proxies parse "
        "HTTP there): target a port with protocol tcp",
        "document 0 (GlobalService/web): spec.ports[2].targetPort: a tcp port relays bytes as they "
        "come, but port 'http' of Service 'web' is http (its local proxies parse HTTP there): "
        "target a port with protocol tcp",
    ]
