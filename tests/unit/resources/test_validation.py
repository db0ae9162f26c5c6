"""Documents in, resources or every violation with its field path out."""

from __future__ import annotations

from typing import Any

import pytest

from meshgate.resources.documents import parse_text
from meshgate.resources.kinds import REGISTRY
from meshgate.resources.validation import parse_documents, parse_resource
from meshgate.resources.violations import ValidationFailed
from tests.support.factories import doc


def violations(document: Any) -> dict[str, str]:
    with pytest.raises(ValidationFailed) as failed:
        parse_resource(document)
    return {v.path: v.message for v in failed.value.violations}


GOOD_GLOBAL_SERVICE = {
    "service": "web",
    "hostnames": ["www.example.com"],
    "vips": ["203.0.113.10"],
    "ports": [{"name": "http", "port": 80, "protocol": "http", "targetPort": "http"}],
}


def test_a_valid_document_becomes_a_resource() -> None:
    resource = parse_resource(doc("GlobalService", "web", GOOD_GLOBAL_SERVICE, app="web"))
    assert resource.key == ("GlobalService", "web")
    assert dict(resource.labels) == {"app": "web"}
    assert resource.spec_dict()["ports"][0]["targetPort"] == "http"
    assert resource.spec_dict()["zones"] == []


def test_every_violation_is_reported_with_its_path() -> None:
    spec = {
        **GOOD_GLOBAL_SERVICE,
        "vips": ["203.0.113.10", "300.1.1.1"],
        "ports": [
            {"name": "http", "port": 80, "protocol": "http", "targetPort": "http"},
            {"name": "x", "port": 70000, "protocol": "udp", "targetPort": "http"},
        ],
    }
    found = violations(doc("GlobalService", "web", spec))
    assert found == {
        "spec.vips[1]": "must be an IPv4 or IPv6 address",
        "spec.ports[1].port": "must be at most 65535",
        "spec.ports[1].protocol": "must be one of http, https, tcp, tls-passthrough",
    }


def test_unknown_fields_are_errors_at_every_level() -> None:
    document = doc("Zone", "eu", {"region": "x", "colour": "blue"})
    document["extra"] = 1
    document["metadata"]["namespace"] = "default"
    assert violations(document) == {
        "extra": "unknown field",
        "metadata.namespace": "unknown field",
        "spec.colour": "unknown field",
    }


def test_types_are_strict() -> None:
    found = violations(doc("Zone", "eu", {"region": 5, "enabled": "yes"}))
    assert found == {"spec.region": "must be a string", "spec.enabled": "must be true or false"}
    found = violations(doc("Service", "web", {"ports": [{"name": "a", "port": "80"}]}))
    assert found == {"spec.ports[0].port": "must be an integer"}


def test_envelope_errors() -> None:
    assert violations({"kind": "Zone", "metadata": {"name": "a"}, "spec": {}}) == {
        "apiVersion": "must be meshgate/v1alpha1"
    }
    found = violations(
        {"apiVersion": "meshgate/v1alpha1", "kind": "Widget", "metadata": {"name": "a"}, "spec": {}}
    )
    assert found["kind"].startswith("unknown kind 'Widget'; known kinds: Mesh, Zone")
    assert violations({"apiVersion": "meshgate/v1alpha1", "kind": "Zone"}) == {
        "metadata": "required",
        "spec": "required",
    }
    assert violations(["not", "a", "mapping"]) == {
        "": "a document must be a mapping with apiVersion, kind, metadata, spec"
    }


def test_system_kinds_are_unknown_to_operators() -> None:
    found = violations(doc("AdminCredential", "admin", {"tokenSha256": "0" * 64}))
    assert "unknown kind 'AdminCredential'" in found["kind"]


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("Zone", "EU"),
        ("Zone", "eu.west"),
        ("Service", "web_1"),
        ("Zone", "a" * 64),
        ("Secret", "-x"),
        ("Zone", "eu\n"),  # a trailing newline must not slip past an anchored pattern
        ("Secret", "web\n"),
    ],
)
def test_names_must_be_dns_safe(kind: str, name: str) -> None:
    spec = {
        "Zone": {},
        "Service": {"ports": [{"name": "a", "port": 1}]},
        "Secret": {"type": "opaque", "data": {}},
    }[kind]
    assert "metadata.name" in violations(doc(kind, name, spec))


def test_labels_are_checked() -> None:
    document = doc("Zone", "eu", {})
    document["metadata"]["labels"] = {"bad key!": "x", "ok": "bad value!"}
    found = violations(document)
    assert found['metadata.labels["bad key!"]'].startswith("invalid key: label keys are")
    assert found["metadata.labels.ok"].startswith("label values are")


def test_cross_field_rules_within_a_spec() -> None:
    spec = {
        **GOOD_GLOBAL_SERVICE,
        "ports": [
            {"name": "https", "port": 443, "protocol": "https", "targetPort": "http"},
            {"name": "https", "port": 443, "protocol": "tcp", "targetPort": "http"},
        ],
        "zones": [{"zone": "eu", "weight": 5}, {"zone": "us"}, {"zone": "eu", "priority": 1}],
    }
    found = violations(doc("GlobalService", "web", spec))
    assert found == {
        "spec.certificateRef": "required: ports[0] is https, the edge needs a certificate Secret",
        "spec.ports[1].name": "duplicate port name 'https' (also ports[0])",
        "spec.ports[1].port": "duplicate port number 443 (also ports[0])",
        "spec.zones[2].zone": "duplicate zone 'eu' (also zones[0])",
        "spec.zones[1].weight": "zones of priority 0 must all set a weight or none of them",
    }


def test_edge_bgp_attributes_cannot_carry_commands() -> None:
    spec = {
        "zone": "eu",
        "bgp": {
            "localASN": 0,
            "routerID": "10.0.0.1\nannounce route 0.0.0.0/0",
            "neighbors": [{"address": "10.0.0.2", "peerASN": 65000, "description": "x\nwithdraw"}],
            "communities": ["65000:100", "65536:1", "no-export\n"],
        },
        "drain": {"reason": "maintenance\rnow"},
    }
    found = violations(doc("Edge", "e1", spec))
    assert found == {
        "spec.bgp.localASN": "must be at least 1",
        "spec.bgp.routerID": "must be an IPv4 address (dotted quad)",
        "spec.bgp.neighbors[0].description": "must not contain control characters (newline, tab, NUL, ...)",
        "spec.bgp.communities[1]": "community part out of range (16 bits each for standard, 32 for large)",
        "spec.bgp.communities[2]": "must be a standard community ASN:VALUE or a large community A:B:C",
        "spec.drain.reason": "must not contain control characters (newline, tab, NUL, ...)",
    }


def test_tls_secret_must_hold_a_matching_certificate_and_key(tls_pair: tuple[str, str]) -> None:
    cert, key = tls_pair
    ok = parse_resource(doc("Secret", "web-tls", {"type": "tls", "data": {"tls.crt": cert, "tls.key": key}}))
    assert ok.kind == "Secret"
    _other_cert, other_key = _pair()
    found = violations(
        doc("Secret", "web-tls", {"type": "tls", "data": {"tls.crt": cert, "tls.key": other_key}})
    )
    assert found == {'spec.data["tls.key"]': "does not match the first certificate in tls.crt"}
    found = violations(doc("Secret", "web-tls", {"type": "tls", "data": {"tls.crt": "nope"}}))
    assert found == {'spec.data["tls.key"]': "required for type tls"}
    found = violations(doc("Secret", "s", {"type": "tls", "data": {"tls.crt": "nope", "tls.key": key}}))
    assert found == {'spec.data["tls.crt"]': "must hold one or more PEM certificates (leaf first)"}


def test_trailing_newlines_are_refused_everywhere() -> None:
    spec = {"ports": [{"name": "http\n", "port": 80}]}
    assert violations(doc("Service", "web", spec)) == {
        "spec.ports[0].name": "must be a DNS label: at most 63 lowercase letters, digits or '-', "
        "starting and ending with a letter or digit"
    }
    gs = {**GOOD_GLOBAL_SERVICE, "hostnames": ["www.example.com\n"]}
    assert list(violations(doc("GlobalService", "web", gs))) == ["spec.hostnames[0]"]
    mesh = {"trustDomain": "example.org", "mtls": {"certificateTTL": "24h\n"}}
    assert list(violations(doc("Mesh", "default", mesh))) == ["spec.mtls.certificateTTL"]
    document = doc("Zone", "eu", {})
    document["metadata"]["labels"] = {"team\n": "x", "ok": "value\n"}
    assert len(violations(document)) == 2


def test_secret_zones() -> None:
    found = violations(doc("Secret", "s", {"type": "opaque", "data": {}, "zones": ["*", "eu", "Bad"]}))
    assert found == {"spec.zones[2]": "must be a zone name, or '*' for every zone"}
    found = violations(doc("Secret", "s", {"type": "opaque", "data": {}, "zones": ["*", "eu"]}))
    assert found == {"spec.zones": "'*' already means every zone: list it alone"}


def test_zone_insight_is_named_after_its_zone() -> None:
    found = violations(doc("ZoneInsight", "other", {"zone": "eu"}))
    assert found == {"metadata.name": "a ZoneInsight is named after its zone: 'eu'"}


def test_duration_fields() -> None:
    found = violations(
        doc("Mesh", "default", {"trustDomain": "example.org", "mtls": {"certificateTTL": "1 day"}})
    )
    assert found == {"spec.mtls.certificateTTL": "must be a duration such as 90s, 15m, 24h or 1h30m"}


def test_resource_version_is_read_back_as_a_revision() -> None:
    document = doc("Zone", "eu", {})
    document["metadata"]["resourceVersion"] = "42"
    assert parse_resource(document).revision == 42
    document["metadata"]["resourceVersion"] = "forty-two"
    assert violations(document) == {"metadata.resourceVersion": "must be a resourceVersion as read back"}


def test_documents_of_a_file_are_numbered_and_duplicates_refused() -> None:
    text = """
apiVersion: meshgate/v1alpha1
kind: Zone
metadata: {name: eu}
spec: {}
---
apiVersion: meshgate/v1alpha1
kind: Zone
metadata: {name: us}
spec: {enabled: maybe}
---
apiVersion: meshgate/v1alpha1
kind: Zone
metadata: {name: eu}
spec: {}
"""
    with pytest.raises(ValidationFailed) as failed:
        parse_documents(parse_text(text))
    shown = [str(v) for v in failed.value.violations]
    assert shown == [
        "document 1 (Zone/us): spec.enabled: must be true or false",
        "document 2 (Zone/eu): metadata.name: Zone/eu is also document 0",
    ]


def test_every_exposed_kind_has_table_columns_and_a_description() -> None:
    for descriptor in REGISTRY.exposed():
        assert descriptor.columns, descriptor.kind
        assert descriptor.description, descriptor.kind


def _pair() -> tuple[str, str]:
    from datetime import UTC, datetime

    from meshgate.demo.resources import public_certificate

    return public_certificate(datetime.now(UTC))


@pytest.fixture
def tls_pair() -> tuple[str, str]:
    return _pair()
