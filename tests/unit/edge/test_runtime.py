"""The documents an edge receives from its zone CP, read into its runtime: a full set accepted,
anything unexpected refused as a whole with the document and field named."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from edge.runtime import (
    Certificate,
    GlobalService,
    PublicPort,
    ServingZone,
    ZoneEndpoint,
    build,
)
from zones.runtime import BadConfig

TD = "mesh.example"
CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"


def documents() -> dict[str, dict[str, Any]]:
    return {
        "Trust/mesh": {"kind": "Trust", "metadata": {"name": "mesh"}, "spec": {"trustDomain": TD, "roots": [CERT]}},
        "Edge/edge-a1": {"kind": "Edge", "metadata": {"name": "edge-a1"}, "spec": {
            "zone": "paris", "bgp": {"localASN": 65001, "neighbors": []},
            "drain": {"signals": ["graceful-shutdown"], "reason": "maintenance"}}},
        "GlobalService/web": {"kind": "GlobalService", "metadata": {"name": "web"}, "spec": {
            "name": "web", "service": "web", "identity": f"spiffe://{TD}/svc/web",
            "hostnames": ["WWW.Example.com", "*.example.com"], "vips": ["203.0.113.10", "2001:db8::0:10"],
            "ports": [{"name": "http", "port": 80, "protocol": "http"},
                      {"name": "https", "port": 443, "protocol": "https"}],
            "certificate": "web-tls",
            "zones": [
                {"zone": "paris", "priority": 0, "weight": 3, "distance": 0, "healthy": 2,
                 "endpoints": [{"address": "10.0.0.1", "port": 10002, "sni": "web.paris.svc.meshgate"},
                               {"address": "10.0.0.2", "port": 10002, "sni": "web.paris.svc.meshgate"}]},
                {"zone": "frankfurt", "priority": 1, "weight": None, "distance": 479.3, "healthy": 1,
                 "endpoints": [{"address": "10.1.0.1", "port": 10002, "sni": "web.frankfurt.svc.meshgate"}]},
                {"zone": "nowhere", "distance": None, "endpoints": []},
            ]}},
        "GlobalService/db": {"kind": "GlobalService", "metadata": {"name": "db"}, "spec": {
            "name": "db", "service": "db", "identity": f"spiffe://{TD}/svc/db", "vips": ["203.0.113.11"],
            "ports": [{"name": "pg", "port": 5432, "protocol": "tcp"},
                      {"name": "pgs", "port": 5433, "protocol": "tls-passthrough"}],
            "certificate": None, "zones": []}},
        "Certificate/web-tls": {"kind": "Certificate", "metadata": {"name": "web-tls"},
                                "spec": {"certificate": CERT, "key": KEY}},
    }  # fmt: skip


def refused(docs: dict[str, dict[str, Any]]) -> str:
    with pytest.raises(BadConfig) as caught:
        build(7, docs)
    return str(caught.value)


def test_a_full_set_of_documents_is_read() -> None:
    runtime = build(7, documents())
    assert runtime.version == 7
    assert runtime.trust_domain == TD
    assert runtime.roots == (CERT,)
    assert runtime.edge is not None
    assert runtime.edge["zone"] == "paris"
    assert runtime.drain == {"signals": ["graceful-shutdown"], "reason": "maintenance"}
    assert runtime.certificates == {"web-tls": Certificate("web-tls", CERT, KEY)}
    web = runtime.services["web"]
    assert web == GlobalService(
        name="web", service="web", identity=f"spiffe://{TD}/svc/web",
        hostnames=("www.example.com", "*.example.com"),  # lowercased: Host is matched lowercased
        vips=("203.0.113.10", "2001:db8::10"),  # normalised
        ports=(PublicPort("http", 80, "http"), PublicPort("https", 443, "https")),
        certificate="web-tls",
        zones=(
            ServingZone("paris", 0, 3, 0.0, 2, (
                ZoneEndpoint("10.0.0.1", 10002, "web.paris.svc.meshgate"),
                ZoneEndpoint("10.0.0.2", 10002, "web.paris.svc.meshgate"))),
            ServingZone("frankfurt", 1, None, 479.3, 1, (
                ZoneEndpoint("10.1.0.1", 10002, "web.frankfurt.svc.meshgate"),)),
            ServingZone("nowhere", 0, None, None, 0, ()),  # listed all the same: the edge reports it
        ),
    )  # fmt: skip
    db = runtime.services["db"]
    assert [p.protocol for p in db.ports] == ["tcp", "tls-passthrough"]
    assert db.certificate is None
    assert db.hostnames == ()
    assert db.zones == ()


def test_without_an_edge_document_the_edge_serves_but_has_no_drain() -> None:
    docs = documents()
    del docs["Edge/edge-a1"]
    runtime = build(1, docs)
    assert runtime.edge is None
    assert runtime.drain is None
    assert set(runtime.services) == {"web", "db"}


def test_a_missing_trust_is_refused() -> None:
    docs = documents()
    del docs["Trust/mesh"]
    assert refused(docs) == "Trust/mesh is missing: no trust domain or roots"
    docs = documents()
    docs["Trust/mesh"]["spec"]["roots"] = []
    assert refused(docs) == "Trust/mesh is missing: no trust domain or roots"


def test_a_certificate_named_but_not_sent_is_refused() -> None:
    docs = documents()
    del docs["Certificate/web-tls"]
    assert refused(docs) == "GlobalService/web: certificate 'web-tls' was not sent"


def test_an_unknown_kind_is_refused_naming_the_document() -> None:
    docs = documents()
    docs["Gateway/x"] = {"kind": "Gateway", "metadata": {"name": "x"}, "spec": {}}
    assert refused(docs) == "Gateway/x: unknown kind 'Gateway' (is the zone CP newer than this edge?)"


def web_with(path: list[str | int], value: Any) -> dict[str, dict[str, Any]]:
    """The documents with one field of GlobalService/web's spec set (or removed: ``...``)."""
    docs = copy.deepcopy(documents())
    target: Any = docs["GlobalService/web"]["spec"]
    for step in path[:-1]:
        target = target[step]
    if value is ...:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return docs


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["ports", 1, "protocol"], "grpc", "GlobalService/web.ports[1].protocol must be one of http, https, tcp, tls-passthrough"),
        (["ports", 0, "port"], 0, "GlobalService/web.ports[0].port must be an integer from 1 to 65535"),
        (["ports", 0, "port"], "80", "GlobalService/web.ports[0].port must be an integer from 1 to 65535"),
        (["ports", 0, "name"], "", "GlobalService/web.ports[0].name must be a non-empty string"),
        (["ports"], ..., "GlobalService/web.ports must be a list"),
        (["vips", 1], "203.0.113", "GlobalService/web.vips[1] must be an IP address"),
        (["vips"], "203.0.113.10", "GlobalService/web.vips must be a list"),
        (["zones", 0, "weight"], 0, "GlobalService/web.zones[0].weight must be an integer from 1 to 1000"),
        (["zones", 0, "weight"], 1001, "GlobalService/web.zones[0].weight must be an integer from 1 to 1000"),
        (["zones", 0, "weight"], 2.5, "GlobalService/web.zones[0].weight must be an integer from 1 to 1000"),
        (["zones", 1, "priority"], -1, "GlobalService/web.zones[1].priority must be an integer from 0 to 1000"),
        (["zones", 1, "distance"], "far", "GlobalService/web.zones[1].distance must be a number or null"),
        (["zones", 1, "distance"], True, "GlobalService/web.zones[1].distance must be a number or null"),
        (["zones", 0, "healthy"], -1, "GlobalService/web.zones[0].healthy must be an integer from 0 to 2147483648"),
        (["zones", 0, "zone"], None, "GlobalService/web.zones[0].zone must be a non-empty string"),
        (["zones", 0, "endpoints", 1, "address"], "ingress.paris", "GlobalService/web.zones[0].endpoints[1].address must be an IP address"),
        (["zones", 0, "endpoints", 1, "port"], 65536, "GlobalService/web.zones[0].endpoints[1].port must be an integer from 1 to 65535"),
        (["zones", 0, "endpoints", 1, "sni"], None, "GlobalService/web.zones[0].endpoints[1].sni must be a non-empty string"),
        (["zones", 0, "endpoints", 1], "10.0.0.2:10002", "GlobalService/web.zones[0].endpoints[1] must be an object"),
        (["zones", 0, "endpoints", 1, "address"], "10.0.0.1", "GlobalService/web.zones[0].endpoints[1] repeats 10.0.0.1:10002"),
        (["zones", 2], "nowhere", "GlobalService/web.zones[2] must be an object"),
        (["hostnames", 0], 7, "GlobalService/web.hostnames[] must be a non-empty string"),
        (["certificate"], 5, "GlobalService/web.certificate must be a non-empty string"),
        (["identity"], "web", "GlobalService/web.identity must be a SPIFFE ID: 'web' is not a SPIFFE ID: it must start with 'spiffe://'"),
        (["identity"], ..., "GlobalService/web.identity must be a non-empty string"),
        (["name"], ..., "GlobalService/web.name must be a non-empty string"),
    ],
)  # fmt: skip
def test_a_bad_global_service_is_refused_naming_the_field(
    path: list[str | int], value: Any, message: str
) -> None:
    assert refused(web_with(path, value)) == message


@pytest.mark.parametrize(
    ("key", "change", "message"),
    [
        ("Trust/mesh", {"trustDomain": ""}, "Trust/mesh.trustDomain must be a non-empty string"),
        ("Trust/mesh", {"roots": CERT}, "Trust/mesh.roots must be a list"),
        ("Edge/edge-a1", {"bgp": None}, "Edge/edge-a1.bgp must be an object"),
        ("Edge/edge-a1", {"drain": "now"}, "Edge/edge-a1.drain must be an object"),
        ("Certificate/web-tls", {"key": ""}, "Certificate/web-tls.key must be a non-empty string"),
        ("Certificate/web-tls", {"certificate": None}, "Certificate/web-tls.certificate must be a non-empty string"),
    ],
)  # fmt: skip
def test_a_bad_document_of_another_kind_is_refused_naming_the_field(
    key: str, change: dict[str, Any], message: str
) -> None:
    docs = documents()
    docs[key]["spec"].update(change)
    assert refused(docs) == message


def test_a_document_without_a_spec_object_or_a_certificate_without_a_name_is_refused() -> None:
    docs = documents()
    docs["GlobalService/db"]["spec"] = None
    assert refused(docs) == "GlobalService/db: spec must be an object"
    docs = documents()
    docs["Certificate/web-tls"]["metadata"] = {}
    assert refused(docs) == "Certificate/web-tls.metadata.name must be a non-empty string"
    docs["Certificate/web-tls"]["metadata"] = "web-tls"
    assert refused(docs) == "Certificate/web-tls.metadata must be an object"
