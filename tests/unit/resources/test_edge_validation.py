"""An Edge's BGP section is refused at apply time with every violation's path: what reaches an
edge's BGP speaker has been checked once, at the boundary."""

from __future__ import annotations

from typing import Any

import pytest

from meshgate.resources.validation import parse_resource
from meshgate.resources.violations import ValidationFailed
from tests.support.factories import doc

NEIGHBOR = {"address": "10.0.0.254", "peerASN": 65000, "localAddress": "10.0.0.1"}


def edge(**bgp: Any) -> dict[str, Any]:
    return doc("Edge", "edge-1", {"zone": "eu", "bgp": {
        "localASN": 65001, "routerID": "10.0.0.1", "neighbors": [NEIGHBOR], **bgp}})  # fmt: skip


def violations(document: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ValidationFailed) as failed:
        parse_resource(document)
    return {v.path: v.message for v in failed.value.violations}


def test_a_valid_edge_is_accepted_with_both_ends_of_the_asn_range() -> None:
    parse_resource(edge())
    parse_resource(edge(localASN=1, neighbors=[{**NEIGHBOR, "peerASN": 4294967295}]))
    v6 = {"address": "2001:db8::1", "peerASN": 65000, "localAddress": "2001:db8::2"}
    parse_resource(edge(neighbors=[v6]))


@pytest.mark.parametrize(
    ("asn", "message"),
    [
        (0, "must be at least 1"),
        (4294967296, "must be at most 4294967295"),
        ("x", "must be an integer"),
        ("65001", "must be an integer"),  # no quiet conversions
        (True, "must be an integer"),
        (65001.5, "must be an integer"),
        (-1, "must be at least 1"),
    ],
)
def test_asns_out_of_range_or_not_integers(asn: Any, message: str) -> None:
    found = violations(edge(localASN=asn, neighbors=[{**NEIGHBOR, "peerASN": asn}]))
    assert found == {"spec.bgp.localASN": message, "spec.bgp.neighbors[0].peerASN": message}


@pytest.mark.parametrize(
    ("router_id", "message"),
    [
        ("2001:db8::1", "must be an IPv4 address (dotted quad)"),
        ("10.0.0", "must be an IPv4 address (dotted quad)"),
        ("10.0.0.256", "must be an IPv4 address (dotted quad)"),
        ("router-1", "must be an IPv4 address (dotted quad)"),
        (167772161, "must be a string"),
        ("0.0.0.0", "must not be 0.0.0.0 (a BGP identifier is non-zero)"),
    ],
)
def test_router_id_must_be_a_non_zero_ipv4_address(router_id: Any, message: str) -> None:
    assert violations(edge(routerID=router_id)) == {"spec.bgp.routerID": message}


def test_neighbor_and_local_addresses_each_with_its_path() -> None:
    neighbors = [
        {"address": "10.0.0.300", "peerASN": 65000},
        {"address": "10.0.0.2", "peerASN": 65000, "localAddress": "local"},
        {"address": "0.0.0.0", "peerASN": 65000, "localAddress": "224.0.0.5"},
        {"address": "10.0.0.4", "peerASN": 65000, "localAddress": "10.0.0.1\n"},
    ]
    assert violations(edge(neighbors=neighbors)) == {
        "spec.bgp.neighbors[0].address": "must be an IPv4 or IPv6 address",
        "spec.bgp.neighbors[1].localAddress": "must be an IPv4 or IPv6 address",
        "spec.bgp.neighbors[2].address": "must be a unicast host address, not unspecified or multicast",
        "spec.bgp.neighbors[2].localAddress": "must be a unicast host address, not unspecified or multicast",
        "spec.bgp.neighbors[3].localAddress": "must be an IPv4 or IPv6 address",
    }


def test_a_local_address_of_another_family_than_its_neighbor() -> None:
    neighbors = [NEIGHBOR, {"address": "2001:db8::1", "peerASN": 65000, "localAddress": "10.0.0.1"}]
    assert violations(edge(neighbors=neighbors)) == {
        "spec.bgp.neighbors[1].localAddress": "must be an IPv6 address, as the neighbor's address is"
    }


def test_every_violation_of_one_edge_at_once() -> None:
    found = violations(
        edge(
            localASN=0, routerID="x", holdTime=1,
            neighbors=[{"address": "nope", "peerASN": "x", "localAddress": "10.0.0.256"}, {"peerASN": 1}],
        )
    )  # fmt: skip
    assert found == {
        "spec.bgp.localASN": "must be at least 1",
        "spec.bgp.routerID": "must be an IPv4 address (dotted quad)",
        "spec.bgp.holdTime": "must be at least 3",
        "spec.bgp.neighbors[0].address": "must be an IPv4 or IPv6 address",
        "spec.bgp.neighbors[0].peerASN": "must be an integer",
        "spec.bgp.neighbors[0].localAddress": "must be an IPv4 or IPv6 address",
        "spec.bgp.neighbors[1].address": "required",
    }
    assert violations(edge(neighbors=[])) == {"spec.bgp.neighbors": "must have at least 1 item(s)"}


def test_a_community_with_digits_of_another_script_is_refused() -> None:
    """ExaBGP reads ASCII digits only: an Edge the control plane accepted must be one its edges
    can announce."""
    from pydantic import ValidationError

    from meshgate.resources.kinds.edge import BgpSpec

    base = {
        "localASN": 65000,
        "routerID": "10.0.0.1",
        "neighbors": [{"address": "10.0.0.2", "peerASN": 65001}],
    }
    BgpSpec.model_validate({**base, "communities": ["65000:1"]})
    with pytest.raises(ValidationError, match="standard community"):
        BgpSpec.model_validate({**base, "communities": ["\u0666\u0665\u0660\u0660\u0660:1"]})
