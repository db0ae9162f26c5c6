from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshgate.pki.identities import (
    Identity,
    classify,
    edge_id,
    global_cp_id,
    ingress_id,
    service_id,
    zone_cp_id,
)
from meshgate.pki.spiffe import SpiffeId


@pytest.mark.parametrize(
    ("text", "trust_domain", "path"),
    [
        ("spiffe://mesh.example/svc/api", "mesh.example", "/svc/api"),
        ("spiffe://mesh.example", "mesh.example", ""),
        ("spiffe://a_b-c.9/Mixed.Case/x-y_z.1", "a_b-c.9", "/Mixed.Case/x-y_z.1"),
        ("spiffe://td/...", "td", "/..."),
    ],
)
def test_parse_accepts_spec_ids(text: str, trust_domain: str, path: str) -> None:
    sid = SpiffeId.parse(text)
    assert (sid.trust_domain, sid.path) == (trust_domain, path)
    assert str(sid) == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("https://mesh.example/svc/api", "must start with 'spiffe://'"),
        ("SPIFFE://mesh.example/svc/api", "lowercase"),
        ("spiffe:///svc/api", "trust domain is missing"),
        ("spiffe://Mesh.example/svc/api", "lowercase letters"),
        ("spiffe://mesh.example:8443/svc/api", "port"),
        ("spiffe://user@mesh.example/svc/api", "userinfo"),
        ("spiffe://mesh.example/svc/api?x=1", "query"),
        ("spiffe://mesh.example/svc/api#frag", "fragment"),
        ("spiffe://mesh.example/", "empty segment"),
        ("spiffe://mesh.example/svc//api", "empty segment"),
        ("spiffe://mesh.example/svc/./api", "'.' segment"),
        ("spiffe://mesh.example/svc/../api", "'..' segment"),
        ("spiffe://mesh.example/svc/a%20b", "may only contain"),
        ("spiffe://mesh.example/svc/a b", "may only contain"),
        ("spiffe://mesh.example/svc/caf\u00e9", "may only contain"),
        ("spiffe://mesh.example/" + "a" * 2040, "2048"),
        ("spiffe://" + "a" * 256 + "/x", "255"),
    ],
)
def test_parse_refuses_with_a_message_naming_the_problem(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        SpiffeId.parse(text)


def test_constructor_validates_like_parse() -> None:
    with pytest.raises(ValueError, match="empty segment"):
        SpiffeId("mesh.example", "/svc/")
    with pytest.raises(ValueError, match="must be empty or start with '/'"):
        SpiffeId("mesh.example", "svc/api")


_segment = st.from_regex(r"[A-Za-z0-9._-]{1,12}", fullmatch=True).filter(lambda s: s not in (".", ".."))


@given(
    trust_domain=st.from_regex(r"[a-z0-9._-]{1,40}", fullmatch=True),
    segments=st.lists(_segment, max_size=6),
)
def test_str_and_parse_round_trip(trust_domain: str, segments: list[str]) -> None:
    sid = SpiffeId(trust_domain, "".join("/" + s for s in segments))
    assert SpiffeId.parse(str(sid)) == sid
    assert sid.segments == tuple(segments)


def test_builders_follow_the_conventions() -> None:
    assert str(service_id("mesh.example", "api")) == "spiffe://mesh.example/svc/api"
    assert str(zone_cp_id("mesh.example", "eu")) == "spiffe://mesh.example/zone/eu/cp"
    assert str(ingress_id("mesh.example", "eu", "in-1")) == ("spiffe://mesh.example/zone/eu/ingress/in-1")
    assert str(edge_id("mesh.example", "eu", "e1")) == "spiffe://mesh.example/zone/eu/edge/e1"
    assert str(global_cp_id("mesh.example")) == "spiffe://mesh.example/global/cp"


@pytest.mark.parametrize(
    "call",
    [
        lambda: service_id("mesh.example", "API"),
        lambda: service_id("mesh.example", "-api"),
        lambda: service_id("mesh.example", "a" * 64),
        lambda: zone_cp_id("mesh.example", "eu_west"),
        lambda: ingress_id("mesh.example", "eu", "in.1"),
        lambda: edge_id("mesh.example", "", "e1"),
        lambda: global_cp_id("Mesh.example"),
    ],
)
def test_builders_refuse_names_that_are_not_dns_labels(call: object) -> None:
    with pytest.raises(ValueError, match=r"DNS label|lowercase"):
        call()  # type: ignore[operator]


@pytest.mark.parametrize(
    ("text", "identity"),
    [
        ("spiffe://td/svc/api", Identity("service", None, "api")),
        ("spiffe://td/zone/eu/cp", Identity("zone-cp", "eu", "eu")),
        ("spiffe://td/zone/eu/ingress/in-1", Identity("ingress", "eu", "in-1")),
        ("spiffe://td/zone/eu/edge/e1", Identity("edge", "eu", "e1")),
        ("spiffe://td/global/cp", Identity("global-cp", None, "global")),
    ],
)
def test_classify_reads_each_role(text: str, identity: Identity) -> None:
    assert classify(SpiffeId.parse(text)) == identity


@pytest.mark.parametrize(
    "text",
    [
        "spiffe://td",
        "spiffe://td/svc",
        "spiffe://td/svc/api/extra",
        "spiffe://td/zone/eu",
        "spiffe://td/zone/eu/proxy/p1",
        "spiffe://td/global/edge",
        "spiffe://td/workload/x",
        "spiffe://td/svc/API",
        "spiffe://td/zone/EU/cp",
        "spiffe://td/zone/eu/edge/e_1",
    ],
)
def test_classify_refuses_other_shapes(text: str) -> None:
    with pytest.raises(ValueError, match=r"not a meshgate identity|not a DNS label"):
        classify(SpiffeId.parse(text))
