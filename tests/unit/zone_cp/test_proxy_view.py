"""The view proxies of one configuration share: which keys an update changes, and entries kept
as they were when their content did not change (the hub encodes and hashes only what changed)."""

from __future__ import annotations

from typing import Any

from meshgate.sync.versions import content_version
from zone_cp.proxies.hub import ProxyIdentity, ProxyView


def cluster(service: str, protocol: str = "http") -> dict[str, Any]:
    return {
        "kind": "Cluster",
        "metadata": {"name": service},
        "spec": {"service": service, "protocol": protocol},
    }


def test_replace_names_only_what_changed_or_went_away() -> None:
    view = ProxyView()
    first = view.replace({"Cluster/a": cluster("a"), "Cluster/b": cluster("b")}, 1)
    assert first == {"Cluster/a", "Cluster/b"}
    changed = view.replace({"Cluster/a": cluster("a", "tcp"), "Cluster/c": cluster("c")}, 2)
    assert changed == {"Cluster/a", "Cluster/b", "Cluster/c"}
    assert view.version == 2
    assert view.entry("Cluster/b") is None
    assert sorted(view.keys()) == ["Cluster/a", "Cluster/c"]


def test_an_unchanged_document_keeps_its_entry() -> None:
    view = ProxyView()
    view.replace({"Cluster/a": cluster("a"), "Cluster/b": cluster("b")}, 1)
    kept = view.entry("Cluster/a")
    assert view.replace({"Cluster/a": cluster("a"), "Cluster/b": cluster("b", "tcp")}, 2) == {"Cluster/b"}
    assert view.entry("Cluster/a") is kept


def test_entries_carry_the_content_version_and_the_encoded_document() -> None:
    view = ProxyView()
    view.replace({"Cluster/a": cluster("a", "tcp")}, 1)
    entry = view.entry("Cluster/a")
    assert entry is not None
    assert entry.version == content_version(cluster("a", "tcp"))
    assert entry.text == '{"kind":"Cluster","metadata":{"name":"a"},"spec":{"service":"a","protocol":"tcp"}}'
    assert entry.size == len(entry.text)


def test_local_proxies_and_ingresses_share_a_configuration_edges_have_their_own() -> None:
    web = ProxyIdentity("local", "spiffe://td/svc/web", service="web")
    api = ProxyIdentity("local", "spiffe://td/svc/api", service="api")
    assert web.config_key == api.config_key
    ingress_a = ProxyIdentity("ingress", "spiffe://td/zone/z/ingress/a", name="a")
    ingress_b = ProxyIdentity("ingress", "spiffe://td/zone/z/ingress/b", name="b")
    assert ingress_a.config_key == ingress_b.config_key != web.config_key
    edge_a = ProxyIdentity("edge", "spiffe://td/zone/z/edge/a", name="a")
    edge_b = ProxyIdentity("edge", "spiffe://td/zone/z/edge/b", name="b")
    assert edge_a.config_key != edge_b.config_key
