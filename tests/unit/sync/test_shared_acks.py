"""Streams of a view that keeps immutable states share what their sinks acknowledged: each keeps
a reference to the state it acked, not a copy of its versions (10,000 documents: about 200 KiB
per stream). Sharing is asserted by identity; NACKs, resumes and per-sink differences still hold."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from meshgate.sync.acked import Acked
from meshgate.sync.messages import Ack, Hello, Nack
from meshgate.sync.source import Entry, SnapshotView, SourceSession, SourceSettings
from meshgate.sync.versions import content_version
from tests.unit.sync.test_protocol import Clock, Sink, deliver, zone_doc


class States:
    """A view whose every change makes a new immutable mapping, as the proxy hub's."""

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}
        self.version = 0

    def put(self, doc: dict[str, Any]) -> str:
        key = f"{doc['kind']}/{doc['metadata']['name']}"
        entry = Entry(content_version(doc), doc, len(json.dumps(doc)))
        self._entries = {**self._entries, key: entry}
        self.version += 1
        return key

    def remove(self, key: str) -> str:
        self._entries = {k: e for k, e in self._entries.items() if k != key}
        self.version += 1
        return key

    def entry(self, key: str) -> Entry | None:
        return self._entries.get(key)

    def keys(self) -> Iterable[str]:
        return list(self._entries)

    def snapshot(self) -> Mapping[str, Entry]:
        return self._entries

    def docs(self) -> dict[str, dict[str, Any]]:
        return {k: e.doc for k, e in self._entries.items()}


def view_of(*names: str) -> States:
    view = States()
    for name in names:
        view.put(zone_doc(name))
    return view


async def connect(view: States, sink: Sink, clock: Clock, **settings: float) -> SourceSession:
    source = SourceSession(view, clock, SourceSettings(**settings))
    source.on_message(sink.hello())
    await deliver(source, sink)
    return source


async def test_streams_that_acked_the_same_state_share_it() -> None:
    assert isinstance(States(), SnapshotView)
    view, clock = view_of("a", "b", "c"), Clock()
    sinks = [Sink() for _ in range(3)]
    sources = [await connect(view, sink, clock) for sink in sinks]
    first = view.snapshot()
    assert all(source.shares(first) for source in sources)
    assert all(sink.state == view.docs() for sink in sinks)

    for source in sources:
        source.mark_dirty([view.put(zone_doc("b", "changed")), view.remove("Zone/c")])
    for source, sink in zip(sources, sinks, strict=True):
        assert [type(a) for a in await deliver(source, sink)] == [Ack]
        assert [u.key for u in sink.changes[-1].upserts] == ["Zone/b"]
        assert sink.changes[-1].removals == ("Zone/c",)
    assert view.snapshot() is not first
    assert all(source.shares(view.snapshot()) for source in sources)
    assert sources[0].known == {k: e.version for k, e in view.snapshot().items()}


async def test_a_nack_keeps_the_state_acked_before_and_the_change_is_sent_again() -> None:
    view, clock = view_of("a", "b"), Clock()
    good, bad = Sink(), Sink()
    ok, refused = await connect(view, good, clock), await connect(view, bad, clock, nack_backoff=1.0)
    before = view.snapshot()
    bad.refuse = "cannot persist"
    for source in (ok, refused):
        source.mark_dirty([view.put(zone_doc("a", "new"))])
    assert [type(a) for a in await deliver(ok, good)] == [Ack]
    assert [type(a) for a in await deliver(refused, bad)] == [Nack]
    assert ok.shares(view.snapshot())
    assert refused.shares(before)  # what its sink holds: the state before the change
    assert bad.state["Zone/a"]["spec"]["region"] == ""

    refused.mark_dirty([view.put(zone_doc("c"))])  # another change while it backs off
    ok.mark_dirty(["Zone/c"])
    await deliver(ok, good)
    bad.refuse = None
    clock.t += 1.0
    assert [type(a) for a in await deliver(refused, bad)] == [Ack]
    assert sorted(u.key for u in bad.changes[-1].upserts) == ["Zone/a", "Zone/c"]
    assert bad.state == good.state == view.docs()
    assert refused.shares(view.snapshot())
    assert ok.shares(view.snapshot())


async def test_a_resume_holding_everything_gets_nothing_and_shares_the_state() -> None:
    view, clock, sink = view_of("a", "b"), Clock(), Sink()
    await connect(view, sink, clock)
    resumed = SourceSession(view, clock)
    resumed.on_message(sink.hello())  # its own versions, parsed from the hello
    assert await deliver(resumed, sink) == []
    assert resumed.shares(view.snapshot())


async def test_a_resume_gets_only_what_changed_then_shares_the_state() -> None:
    view, clock, sink = view_of("a", "b", "c"), Clock(), Sink()
    await connect(view, sink, clock)
    view.put(zone_doc("b", "x"))
    view.remove("Zone/c")
    resumed = SourceSession(view, clock)
    resumed.on_message(sink.hello())
    assert not resumed.shares(view.snapshot())
    await deliver(resumed, sink)
    assert [u.key for u in sink.changes[-1].upserts] == ["Zone/b"]
    assert sink.changes[-1].removals == ("Zone/c",)
    assert resumed.shares(view.snapshot())
    assert sink.state == view.docs()


def test_own_versions_override_the_shared_state() -> None:
    view = view_of("a", "b")
    acked = Acked({})
    acked.rebase(view.snapshot())
    acked.apply({"Zone/a": None, "Zone/z": "0" * 24})  # removed, and one the state lacks
    assert acked.version("Zone/a") is None
    assert acked.version("Zone/b") == view.snapshot()["Zone/b"].version
    assert acked.as_dict() == {"Zone/b": view.snapshot()["Zone/b"].version, "Zone/z": "0" * 24}
    assert not acked.shares(view.snapshot())
    assert "Zone/a" in view.snapshot()  # the shared state itself is never changed


def test_hello_versions_are_the_streams_own() -> None:
    acked = Acked(Hello({"Zone/a": "1" * 24}).known)
    acked.apply({"Zone/a": None, "Zone/b": "2" * 24})
    assert acked.as_dict() == {"Zone/b": "2" * 24}
    assert acked.version("Zone/a") is None
