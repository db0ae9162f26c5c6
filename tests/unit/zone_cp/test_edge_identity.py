"""Who an edge is to its zone CP: the identity its enrollment asks for, the one its certificate
proves, and what it may register (its own EdgeStatus, in its own zone, nothing else)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cryptography import x509

from meshgate.demo.resources import public_certificate
from meshgate.pki.identities import classify
from meshgate.pki.spiffe import SpiffeId
from meshgate.pki.verify import VerifiedPeer
from tests.support.factories import resource
from zone_cp.proxies.certificates import Refused, identity_for, identity_of
from zone_cp.proxies.hub import ProxyIdentity
from zone_cp.proxies.server import _authorize

TD = "mesh.example"
EDGE = ProxyIdentity("edge", f"spiffe://{TD}/zone/paris/edge/edge-1", name="edge-1")


def peer(spiffe_id: str, issuer_zone: str | None) -> VerifiedPeer:
    leaf = x509.load_pem_x509_certificate(public_certificate(datetime.now(UTC))[0].encode())
    parsed = SpiffeId.parse(spiffe_id)
    return VerifiedPeer(parsed, classify(parsed), leaf, issuer_zone, (leaf,))


def test_an_edge_enrolls_for_its_name_in_this_zone() -> None:
    assert identity_for("edge", "", "edge-1", TD, "paris") == EDGE
    for bad in ("", None, "Edge-1", "edge_1", "a" * 64):
        with pytest.raises(Refused, match="an edge has a name") as refused:
            identity_for("edge", None, bad, TD, "paris")
        assert refused.value.status == 400
    with pytest.raises(Refused, match="role must be local, ingress or edge, not 'gateway'"):
        identity_for("gateway", None, "edge-1", TD, "paris")


def test_an_edge_certificate_speaks_for_its_edge_only_in_its_own_zone() -> None:
    assert identity_of(peer(EDGE.spiffe_id, "paris"), "paris") == EDGE
    # Named for frankfurt, even if paris's intermediate signed it: not a proxy of paris.
    with pytest.raises(Refused, match="is not a proxy of zone 'paris'") as refused:
        identity_of(peer(f"spiffe://{TD}/zone/frankfurt/edge/edge-1", "paris"), "paris")
    assert refused.value.status == 403
    with pytest.raises(Refused, match="was not issued by zone 'paris'"):
        identity_of(peer(EDGE.spiffe_id, "frankfurt"), "paris")
    with pytest.raises(Refused, match="is not a proxy of zone 'paris'"):
        identity_of(peer(f"spiffe://{TD}/zone/paris/cp", "paris"), "paris")


def test_an_edge_writes_its_own_status_and_nothing_else() -> None:
    _authorize(EDGE, resource("EdgeStatus", "edge-1", {"zone": "paris"}), "paris")
    refused = {
        "another edge's status": resource("EdgeStatus", "edge-2", {"zone": "paris"}),
        "its status in another zone": resource("EdgeStatus", "edge-1", {"zone": "frankfurt"}),
        "a Dataplane": resource("Dataplane", "paris.edge-1", {"zone": "paris", "role": "ingress", "address": "10.0.0.1", "port": 1}),
        "a ZoneIngress": resource("ZoneIngress", "paris.edge-1", {"zone": "paris", "address": "10.0.0.1", "port": 1}),
    }  # fmt: skip
    for what, written in refused.items():
        with pytest.raises(Refused) as refusal:
            _authorize(EDGE, written, "paris")
        assert refusal.value.status == 403, what
    # Nor may a proxy or an ingress write an edge's status.
    local = ProxyIdentity("local", f"spiffe://{TD}/svc/edge-1", service="edge-1")
    ingress = ProxyIdentity("ingress", f"spiffe://{TD}/zone/paris/ingress/edge-1", name="edge-1")
    for identity in (local, ingress):
        with pytest.raises(Refused, match="may not write EdgeStatus/edge-1"):
            _authorize(identity, resource("EdgeStatus", "edge-1", {"zone": "paris"}), "paris")
