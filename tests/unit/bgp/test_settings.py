"""BgpSettings from the Edge's spec.bgp: defaults, canonical forms, every violation with its path."""

from __future__ import annotations

from typing import Any

import pytest

from bgp.settings import BgpSettings, Neighbor, SettingsInvalid, settings_from_spec


def spec(**extra: Any) -> dict[str, Any]:
    return {
        "localASN": 65000,
        "routerID": "192.0.2.10",
        "neighbors": [{"address": "192.0.2.1", "peerASN": 65001}],
        **extra,
    }


def errors(doc: object) -> list[str]:
    with pytest.raises(SettingsInvalid) as caught:
        settings_from_spec(doc)
    assert isinstance(caught.value, ValueError)
    return list(caught.value.errors)


def test_a_minimal_spec_takes_the_defaults() -> None:
    assert settings_from_spec(spec()) == BgpSettings(
        local_asn=65000,
        router_id="192.0.2.10",
        hold_time=90,
        neighbors=(Neighbor("192.0.2.1", 65001),),
        communities=(),
        med=0,
    )


def test_every_field_is_read_in_canonical_form() -> None:
    settings = settings_from_spec(
        spec(
            holdTime=9,
            med=4294967295,
            communities=["65000:1", "65000:1", "graceful-shutdown", "65000:7:4200000000"],
            neighbors=[
                {
                    "address": "2001:DB8::1",
                    "peerASN": 4200000000,
                    "localAddress": "2001:db8:0::2",
                    "description": "transit (A)",
                },
                {"address": "192.0.2.1", "peerASN": 65001, "localAddress": None},
            ],
        )
    )
    assert settings.hold_time == 9
    assert settings.med == 4294967295
    assert settings.communities == ("65000:1", "65535:0", "65000:7:4200000000")
    assert settings.neighbors == (
        Neighbor("2001:db8::1", 4200000000, "2001:db8::2", "transit (A)"),
        Neighbor("192.0.2.1", 65001),
    )
    assert [n.version for n in settings.neighbors] == [6, 4]


def test_every_violation_is_reported_with_its_path() -> None:
    found = errors(
        {
            "localASN": 0,
            "routerID": "0.0.0.0",
            "holdTime": 2,
            "med": -1,
            "communities": ["65536:1", "no-such-name"],
            "neighbors": [
                {"address": "192.0.2.1", "peerASN": 65001},
                {"address": "192.0.2.300", "peerASN": "65001"},
                {"address": "192.0.2.1", "peerASN": 65002},
                {"address": "192.0.2.2", "peerASN": 65001, "localAddress": "2001:db8::1"},
                {"peerASN": 65001, "description": "a\nb"},
                "not an object",
            ],
        }
    )
    assert [e.split(":")[0] for e in found] == [
        "bgp.localASN",
        "bgp.routerID",
        "bgp.holdTime",
        "bgp.med",
        "bgp.neighbors[1].address",
        "bgp.neighbors[1].peerASN",
        "bgp.neighbors[2].address",
        "bgp.neighbors[3].localAddress",
        "bgp.neighbors[4].address",
        "bgp.neighbors[4].description",
        "bgp.neighbors[5]",
        "bgp.communities[0]",
        "bgp.communities[1]",
    ]
    assert "bgp.neighbors[2].address: duplicate neighbor (also bgp.neighbors[0])" in found
    assert "bgp.neighbors[3].localAddress: must be an IPv4 address, as the neighbor's address is" in found
    assert "bgp.routerID: must not be 0.0.0.0 (a BGP identifier is non-zero)" in found
    assert "bgp.neighbors[4].address: required" in found


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (None, "bgp: must be an object"),
        (
            {"routerID": "192.0.2.10", "neighbors": [{"address": "192.0.2.1", "peerASN": 1}]},
            "bgp.localASN: required",
        ),
        (spec(neighbors=[]), "bgp.neighbors: at least one neighbor"),
        (spec(neighbors={"address": "192.0.2.1"}), "bgp.neighbors: must be a list"),
        ({"localASN": 65000, "routerID": "192.0.2.10"}, "bgp.neighbors: required"),
        (
            spec(neighbors=[{"address": f"192.0.2.{i}", "peerASN": 1} for i in range(1, 34)]),
            "bgp.neighbors: at most 32",
        ),
        (spec(localASN=True), "bgp.localASN: an AS number must be an integer, not bool"),
        (spec(localASN=4294967296), "bgp.localASN: an AS number must be between 1 and 4294967295"),
        (spec(routerID="2001:db8::1"), "bgp.routerID: must be an IPv4 address"),
        (spec(holdTime=0), "bgp.holdTime: a hold time (seconds) must be between 3 and 65535"),
        (spec(communities="65000:1"), "bgp.communities: must be a list"),
        (
            spec(neighbors=[{"address": "fe80::1%eth0", "peerASN": 1}]),
            "bgp.neighbors[0].address: must not carry a zone index",
        ),
        (
            spec(neighbors=[{"address": "224.0.0.5", "peerASN": 1}]),
            "bgp.neighbors[0].address: must be a unicast host address",
        ),
        (
            spec(neighbors=[{"address": "0.0.0.0", "peerASN": 1}]),
            "bgp.neighbors[0].address: must be a unicast host address",
        ),
        (
            spec(neighbors=[{"address": " 192.0.2.1", "peerASN": 1}]),
            "bgp.neighbors[0].address: must be an IPv4 or IPv6 address",
        ),
        (
            spec(neighbors=[{"address": "\u0661\u0669\u0662.0.2.1", "peerASN": 1}]),
            "bgp.neighbors[0].address: must be an IPv4 or IPv6 address",
        ),
    ],
)
def test_one_violation(doc: object, expected: str) -> None:
    found = errors(doc)
    assert len(found) == 1, found
    assert found[0].startswith(expected), found


def test_unknown_keys_are_ignored_for_forward_compatibility() -> None:
    assert settings_from_spec(spec(bfd={"interval": 100})).local_asn == 65000


def test_the_message_lists_every_violation() -> None:
    with pytest.raises(ValueError, match=r"(?s)bgp\.localASN: .*\nbgp\.routerID: "):
        settings_from_spec(
            {"localASN": "x", "routerID": "x", "neighbors": [{"address": "192.0.2.1", "peerASN": 1}]}
        )
