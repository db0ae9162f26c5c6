"""Proxies of one configuration share its view's states: a stream that acknowledged a state keeps
a reference to the view's mapping, so the zone CP's memory per connected proxy does not hold a
copy of 10,000 versions."""

from __future__ import annotations

from typing import Any

from meshgate.sync import messages
from meshgate.sync.messages import Ack, Hello
from meshgate.sync.source import SnapshotView, SourceSession
from zone_cp.proxies.hub import ProxyView


def cluster(service: str, protocol: str = "http") -> dict[str, Any]:
    return {
        "kind": "Cluster",
        "metadata": {"name": service},
        "spec": {"service": service, "protocol": protocol},
    }


def docs(protocol_of_a: str = "http") -> dict[str, dict[str, Any]]:
    return {"Cluster/a": cluster("a", protocol_of_a), "Cluster/b": cluster("b")}


def ack_everything(source: SourceSession) -> None:
    parts = source.poll()
    assert parts
    source.on_message(Ack(parts[-1].nonce, parts[-1].version))


def test_a_change_makes_a_new_state_and_no_change_keeps_it() -> None:
    view = ProxyView()
    view.replace(docs(), 1)
    first = view.snapshot()
    assert view.replace(docs(), 2) == set()
    assert view.snapshot() is first
    assert view.replace(docs("tcp"), 3) == {"Cluster/a"}
    assert view.snapshot() is not first
    assert first["Cluster/a"].doc == cluster("a")  # the old state is left as it was


def test_streams_of_one_view_share_the_state_they_acknowledged() -> None:
    view = ProxyView()
    assert isinstance(view, SnapshotView)
    view.replace(docs(), 1)
    streams = [SourceSession(view, lambda: 0.0) for _ in range(3)]
    for stream in streams:
        stream.on_message(Hello({}))
        ack_everything(stream)
    assert all(stream.shares(view.snapshot()) for stream in streams)

    changed = view.replace(docs("tcp"), 2)
    for stream in streams:
        stream.mark_dirty(changed)
        update = stream.poll()[-1]
        assert [u.key for u in update.upserts] == ["Cluster/a"]
        stream.on_message(messages.decode(messages.encode(Ack(update.nonce, update.version))))
    assert all(stream.shares(view.snapshot()) for stream in streams)
