"""The sync protocol core, driven by hand: no sockets, no sleeping (time is a variable)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import pytest

from meshgate.sync import messages
from meshgate.sync.messages import Ack, Hello, Nack, ProtocolError, Update
from meshgate.sync.sink import Change, Rejected, SinkSession
from meshgate.sync.source import Entry, SourceSession, SourceSettings
from meshgate.sync.versions import content_version


def zone_doc(name: str, region: str = "") -> dict[str, Any]:
    return {
        "apiVersion": "meshgate/v1alpha1",
        "kind": "Zone",
        "metadata": {"name": name},
        "spec": {"region": region},
    }


class View:
    """A source's resources, by key."""

    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}
        self.version = 0

    def put(self, doc: dict[str, Any]) -> str:
        key = f"{doc['kind']}/{doc['metadata']['name']}"
        self.docs[key] = doc
        self.version += 1
        return key

    def remove(self, key: str) -> str:
        del self.docs[key]
        self.version += 1
        return key

    def entry(self, key: str) -> Entry | None:
        doc = self.docs.get(key)
        return None if doc is None else Entry(content_version(doc), doc, len(json.dumps(doc)))

    def keys(self) -> Iterable[str]:
        return list(self.docs)


class Sink:
    """A sink's last good state, and a switch to refuse the next update."""

    def __init__(self) -> None:
        self.state: dict[str, dict[str, Any]] = {}
        self.applied = 0
        self.refuse: str | None = None
        self.changes: list[Change] = []
        self.session = SinkSession(self.apply)

    async def apply(self, change: Change) -> None:
        if self.refuse:
            raise Rejected(self.refuse, ("detail",))
        self.changes.append(change)
        for upsert in change.upserts:
            self.state[upsert.key] = upsert.doc
        for key in change.removals:
            self.state.pop(key, None)
        self.applied = change.version

    def hello(self) -> Hello:
        return SinkSession.hello({k: content_version(d) for k, d in self.state.items()}, self.applied)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


async def deliver(source: SourceSession, sink: Sink) -> list[Ack | Nack]:
    """Send what the source has, through the wire format, and hand back the answers."""
    answers: list[Ack | Nack] = []
    for update in source.poll():
        wire = messages.encode(update)
        answer = await sink.session.on_message(messages.decode(wire), len(wire))
        if answer is not None:
            assert isinstance(answer, Ack | Nack)
            answers.append(answer)
            source.on_message(messages.decode(messages.encode(answer)))
    return answers


async def test_first_connection_gets_a_snapshot_then_deltas() -> None:
    view, sink, clock = View(), Sink(), Clock()
    for name in ("a", "b", "c"):
        view.put(zone_doc(name))
    source = SourceSession(view, clock)
    source.on_message(sink.hello())
    assert [type(a) for a in await deliver(source, sink)] == [Ack]
    assert set(sink.state) == {"Zone/a", "Zone/b", "Zone/c"}
    assert sink.applied == view.version

    source.mark_dirty([view.put(zone_doc("b", "changed")), view.remove("Zone/c")])
    await deliver(source, sink)
    last = sink.changes[-1]
    assert [u.key for u in last.upserts] == ["Zone/b"]
    assert last.removals == ("Zone/c",)
    assert sink.state["Zone/b"]["spec"]["region"] == "changed"
    assert await deliver(source, sink) == []  # nothing more to say


async def test_reconnect_resends_only_what_changed_meanwhile() -> None:
    view, sink, clock = View(), Sink(), Clock()
    for i in range(50):
        view.put(zone_doc(f"z{i}"))
    first = SourceSession(view, clock)
    first.on_message(sink.hello())
    await deliver(first, sink)
    # Disconnected: the source changes two resources and removes one.
    view.put(zone_doc("z3", "x"))
    view.put(zone_doc("new"))
    view.remove("Zone/z7")
    second = SourceSession(view, clock)
    second.on_message(sink.hello())
    await deliver(second, sink)
    resent = sink.changes[-1]
    assert sorted(u.key for u in resent.upserts) == ["Zone/new", "Zone/z3"]
    assert resent.removals == ("Zone/z7",)
    assert sink.state == view.docs


async def test_changes_while_in_flight_are_batched_into_the_next_update() -> None:
    view, sink, clock = View(), Sink(), Clock()
    source = SourceSession(view, clock)
    source.on_message(sink.hello())
    source.mark_dirty([view.put(zone_doc("a"))])
    parts = source.poll()
    source.mark_dirty([view.put(zone_doc("b")), view.put(zone_doc("c"))])
    assert source.poll() == []  # one update in flight at a time
    wire = messages.encode(parts[0])
    answer = await sink.session.on_message(messages.decode(wire), len(wire))
    assert answer is not None
    delivered = source.on_message(answer)
    assert delivered is not None
    assert delivered.changes == 1
    await deliver(source, sink)
    assert sorted(u.key for u in sink.changes[-1].upserts) == ["Zone/b", "Zone/c"]


async def test_nack_keeps_last_good_state_and_backs_off() -> None:
    view, sink, clock = View(), Sink(), Clock()
    view.put(zone_doc("a"))
    source = SourceSession(view, clock, SourceSettings(nack_backoff=2.0))
    source.on_message(sink.hello())
    await deliver(source, sink)
    sink.refuse = "cannot persist: no space left on device"
    source.mark_dirty([view.put(zone_doc("a", "new"))])
    answers = await deliver(source, sink)
    assert isinstance(answers[0], Nack)
    assert answers[0].error == "cannot persist: no space left on device"
    assert sink.state["Zone/a"]["spec"]["region"] == ""  # last good state in force
    assert source.stats.last_nack is not None
    assert source.stats.nacks == 1
    # No hot loop: nothing is sent again before the backoff, even when more changes arrive.
    source.mark_dirty([view.put(zone_doc("b"))])
    assert source.poll() == []
    assert source.next_retry() == clock.t + 2.0
    clock.t += 2.0
    answers = await deliver(source, sink)  # the refusal holds: backoff doubles
    assert isinstance(answers[0], Nack)
    clock.t += 2.0
    assert source.poll() == []
    clock.t += 2.0
    sink.refuse = None
    assert [type(a) for a in await deliver(source, sink)] == [Ack]
    assert sink.state == view.docs


async def test_a_poll_just_before_the_backoff_ends_does_not_strand_the_changes() -> None:
    # A timer may fire a moment before the backoff ends (uvloop's do): poll sends nothing then,
    # and next_retry must still name a time, even once the clock has passed it, or the writer
    # would sleep until some other change arrived.
    view, sink, clock = View(), Sink(), Clock()
    view.put(zone_doc("a"))
    source = SourceSession(view, clock, SourceSettings(nack_backoff=1.0))
    source.on_message(sink.hello())
    await deliver(source, sink)
    sink.refuse = "unknown kind"
    source.mark_dirty([view.put(zone_doc("a", "new"))])
    assert isinstance((await deliver(source, sink))[0], Nack)
    retry_at = clock.t + 1.0
    sink.refuse = None
    clock.t = retry_at - 0.0005  # the timer fired early
    assert source.poll() == []
    clock.t = retry_at + 0.0001  # and the writer asks a moment later
    assert source.next_retry() == retry_at
    assert [type(a) for a in await deliver(source, sink)] == [Ack]
    assert source.next_retry() is None  # nothing waits any more
    assert sink.state == view.docs


async def test_large_updates_go_in_parts_and_apply_at_once() -> None:
    view, sink, clock = View(), Sink(), Clock()
    for i in range(40):
        view.put(zone_doc(f"z{i}", "x" * 1000))
    source = SourceSession(view, clock, SourceSettings(max_message_bytes=10_000))
    source.on_message(sink.hello())
    parts = source.poll()
    assert len(parts) > 3
    assert [p.final for p in parts] == [False] * (len(parts) - 1) + [True]
    for part in parts[:-1]:
        wire = messages.encode(part)
        assert await sink.session.on_message(messages.decode(wire), len(wire)) is None
        assert sink.state == {}  # nothing applied before the last part
    wire = messages.encode(parts[-1])
    assert isinstance(await sink.session.on_message(messages.decode(wire), len(wire)), Ack)
    assert len(sink.state) == 40


async def test_a_document_that_does_not_match_its_version_is_a_protocol_error() -> None:
    sink = Sink()
    doc = zone_doc("a")
    forged = Update("n1", 1, (messages.Upsert("Zone/a", content_version(zone_doc("b")), doc),))
    with pytest.raises(ProtocolError, match="does not match its version"):
        await sink.session.on_message(forged, 100)
    assert sink.state == {}


async def test_acks_must_answer_the_update_in_flight() -> None:
    view, clock = View(), Clock()
    source = SourceSession(view, clock)
    source.on_message(Hello({}))
    with pytest.raises(ProtocolError, match="unknown nonce"):
        source.on_message(Ack("made-up", 1))
    with pytest.raises(ProtocolError, match="hello sent twice"):
        source.on_message(Hello({}))


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("not json", "not JSON"),
        ("[]", "JSON object"),
        ('{"type": "gossip"}', "unknown message type 'gossip'"),
        ('{"type": "hello", "known": {}, "extra": 1}', "unknown field"),
        ('{"type": "hello", "known": {"Zone/a": "zz"}}', "malformed content version"),
        ('{"type": "hello", "known": {"../etc": "' + "0" * 24 + '"}}', "malformed resource key"),
        ('{"type": "ack", "nonce": "n", "version": -1}', "non-negative"),
        ('{"type": "ack", "nonce": "n\\n", "version": 1}', "malformed nonce"),
        (
            '{"type": "update", "nonce": "n", "version": 1, "upserts": [{"key": "Zone/a"}], "removals": [], "final": true}',
            "must be {key, version, doc}",
        ),
    ],
)
def test_malformed_messages_are_protocol_errors(raw: str, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        messages.decode(raw)


def test_oversized_messages_are_refused_before_parsing() -> None:
    with pytest.raises(ProtocolError, match="exceeds"):
        messages.decode(" " * (messages.MAX_MESSAGE_BYTES + 1))


def test_private_fields_do_not_change_a_resources_version() -> None:
    """A zone holds the CA document without its key (the field at its default): same version."""
    from meshgate.resources.kinds.system import MeshCASpec
    from meshgate.resources.model import Resource
    from meshgate.sync.resource_versions import resource_version

    spec = {"certificate": "PEM", "fingerprint": "sha256:" + "0" * 64}
    at_global = Resource("MeshCA", "default", MeshCASpec(**spec, encrypted_key="secret", kek_id="k1"))
    at_zone = Resource("MeshCA", "default", MeshCASpec(**spec))
    assert resource_version(at_global) == resource_version(at_zone)
    changed = Resource("MeshCA", "default", MeshCASpec(**{**spec, "certificate": "OTHER"}))
    assert resource_version(changed) != resource_version(at_zone)
