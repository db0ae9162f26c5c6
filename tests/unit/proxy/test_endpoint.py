"""``Endpoint``: its key and hash are made once, and still follow its fields."""

from __future__ import annotations

import dataclasses

from meshgate.proxy.cluster import Endpoint


def test_equal_endpoints_share_a_hash_and_find_each_other_in_a_dict() -> None:
    a = Endpoint("10.0.0.1", 8080, zone="eu", sni="web.mesh")
    b = Endpoint("10.0.0.1", 8080, zone="eu", sni="web.mesh", metadata={"version": "2"})
    assert a == b
    assert hash(a) == hash(b)
    assert {a: "pool"}[b] == "pool"


def test_an_endpoint_that_differs_in_any_compared_field_is_another_pool() -> None:
    a = Endpoint("10.0.0.1", 8080, zone="eu")
    for changed in (
        dataclasses.replace(a, port=8081),
        dataclasses.replace(a, zone="us"),
        dataclasses.replace(a, sni="other.mesh"),
        dataclasses.replace(a, weight=2),
    ):
        assert changed != a
        assert changed not in {a: 1}


def test_key_is_address_and_port_and_follows_replace() -> None:
    a = Endpoint("10.0.0.1", 8080, zone="eu")
    assert a.key == ("10.0.0.1", 8080)
    assert dataclasses.replace(a, port=9090).key == ("10.0.0.1", 9090)
    assert "key" not in repr(a)
    assert "_hash" not in repr(a)
