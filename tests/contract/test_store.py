"""The store contract: what every backend promises (SQLite and etcd alike)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from meshgate.resources.selectors import Selector
from meshgate.store.errors import AlreadyExists, Conflict, NotFound, TooLarge
from meshgate.store.interface import (
    Delete,
    EventType,
    Expect,
    Limits,
    Outcome,
    Put,
    Store,
    WatchEvent,
)
from tests.contract.conftest import OpenStore
from tests.support.factories import opaque_secret, service, zone


async def take(events: AsyncIterator[WatchEvent], n: int, timeout: float = 10) -> list[WatchEvent]:
    out: list[WatchEvent] = []

    async def collect() -> None:
        async for event in events:
            out.append(event)
            if len(out) == n:
                return

    await asyncio.wait_for(collect(), timeout)
    return out


async def test_create_then_get_returns_what_was_written(store: Store) -> None:
    created = await store.create(zone("eu-west", region="Europe", tier="gold"))
    assert created.revision is not None
    assert created.revision > 0
    assert created.generation == 1
    assert created.created is not None
    got = await store.get("Zone", "eu-west")
    assert got == created
    assert got.spec_dict() == {"region": "Europe", "enabled": True}
    assert dict(got.labels) == {"tier": "gold"}


async def test_create_twice_is_refused(store: Store) -> None:
    await store.create(zone("eu-west"))
    with pytest.raises(AlreadyExists):
        await store.create(zone("eu-west", region="other"))
    assert (await store.get("Zone", "eu-west")).spec_dict()["region"] == "eu-west"


async def test_get_missing_raises_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.get("Zone", "nowhere")


async def test_update_with_stale_revision_is_a_conflict(store: Store) -> None:
    first = await store.create(zone("eu-west"))
    second = await store.update(
        zone("eu-west", region="changed").with_store_fields(
            revision=first.revision, generation=None, created=None
        )
    )
    assert second.revision is not None
    assert first.revision is not None
    assert second.revision > first.revision
    assert second.generation == 2
    assert second.created == first.created
    with pytest.raises(Conflict) as info:
        await store.update(
            zone("eu-west", region="stale").with_store_fields(
                revision=first.revision, generation=None, created=None
            )
        )
    assert info.value.actual == second.revision
    assert (await store.get("Zone", "eu-west")).spec_dict()["region"] == "changed"


async def test_concurrent_updates_from_one_revision_one_wins(open_store: OpenStore) -> None:
    a, b = await open_store(), await open_store()
    base = await a.create(zone("eu-west"))

    async def update(store: Store, region: str) -> str:
        try:
            await store.update(
                zone("eu-west", region=region).with_store_fields(
                    revision=base.revision, generation=None, created=None
                )
            )
        except Conflict:
            return "conflict"
        return "ok"

    outcomes = await asyncio.gather(update(a, "one"), update(b, "two"))
    assert sorted(outcomes) == ["conflict", "ok"]
    winner = "one" if outcomes[0] == "ok" else "two"
    assert (await a.get("Zone", "eu-west")).spec_dict()["region"] == winner


async def test_update_of_missing_resource_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.update(zone("ghost"))


async def test_labels_only_change_keeps_generation(store: Store) -> None:
    await store.create(zone("eu-west"))
    result = await store.put(zone("eu-west", team="edge"))
    assert result.outcome is Outcome.UPDATED
    assert result.resource.generation == 1
    assert dict(result.resource.labels) == {"team": "edge"}


async def test_unchanged_put_does_not_bump_the_revision(store: Store) -> None:
    created = await store.create(zone("eu-west"))
    before = await store.revision()
    result = await store.put(zone("eu-west"))
    assert result.outcome is Outcome.UNCHANGED
    assert result.resource.revision == created.revision
    assert await store.revision() == before


async def test_delete(store: Store) -> None:
    created = await store.create(zone("eu-west"))
    with pytest.raises(Conflict):
        await store.delete("Zone", "eu-west", revision=(created.revision or 0) + 1000)
    last = await store.delete("Zone", "eu-west", revision=created.revision)
    assert last.spec == created.spec
    with pytest.raises(NotFound):
        await store.get("Zone", "eu-west")
    with pytest.raises(NotFound):
        await store.delete("Zone", "eu-west")


async def test_apply_is_all_or_nothing(store: Store) -> None:
    await store.create(zone("existing"))
    before = await store.revision()
    with pytest.raises(AlreadyExists):
        await store.apply(
            [
                Put(zone("new-1")),
                Put(service("web")),
                Put(zone("existing", region="x"), Expect.ABSENT),
            ]
        )
    assert await store.revision() == before
    assert [r.name for r in (await store.list()).items] == ["existing"]


async def test_one_apply_is_one_revision(store: Store) -> None:
    result = await store.apply([Put(zone("a")), Put(zone("b")), Put(service("web"))])
    assert {r.outcome for r in result.results} == {Outcome.CREATED}
    assert {r.resource.revision for r in result.results} == {result.revision}
    assert await store.revision() == result.revision


async def test_apply_mixes_puts_and_deletes(store: Store) -> None:
    await store.apply([Put(zone("a")), Put(zone("b"))])
    result = await store.apply([Delete("Zone", "a"), Put(zone("b", region="B")), Put(zone("c"))])
    assert [r.outcome for r in result.results] == [Outcome.DELETED, Outcome.UPDATED, Outcome.CREATED]
    assert [r.name for r in (await store.list("Zone")).items] == ["b", "c"]


async def test_list_by_kind_and_selector(store: Store) -> None:
    await store.apply(
        [
            Put(zone("b", env="prod")),
            Put(zone("a", env="dev")),
            Put(service("web", env="prod")),
        ]
    )
    listing = await store.list("Zone")
    assert [r.name for r in listing.items] == ["a", "b"]
    assert listing.revision == await store.revision()
    prod = await store.list(selector=Selector.parse("env=prod"))
    assert [(r.kind, r.name) for r in prod.items] == [("Service", "web"), ("Zone", "b")]
    assert (await store.list("Mesh")).items == ()


async def test_watch_delivers_every_change_in_order(store: Store) -> None:
    start = await store.revision()
    events = store.watch(from_revision=start)
    await store.create(zone("a"))
    await store.put(zone("a", region="A"))
    await store.apply([Put(zone("b")), Put(service("web"))])
    await store.delete("Zone", "a")
    got = await take(events, 5)
    assert [(e.type, e.resource.kind, e.resource.name) for e in got] == [
        (EventType.ADDED, "Zone", "a"),
        (EventType.MODIFIED, "Zone", "a"),
        (EventType.ADDED, "Zone", "b"),
        (EventType.ADDED, "Service", "web"),
        (EventType.DELETED, "Zone", "a"),
    ]
    revisions = [e.revision for e in got]
    assert revisions == sorted(revisions)
    assert revisions[2] == revisions[3]  # one apply, one revision
    assert got[1].resource.spec_dict()["region"] == "A"
    assert got[4].resource.spec_dict()["region"] == "A"  # a delete shows the last state


async def test_watch_filters_by_kind(store: Store) -> None:
    start = await store.revision()
    events = store.watch(from_revision=start, kinds={"Service"})
    await store.create(zone("a"))
    await store.create(service("web"))
    got = await take(events, 1)
    assert [(e.resource.kind, e.resource.name) for e in got] == [("Service", "web")]


async def test_watch_resumes_from_a_revision(open_store: OpenStore) -> None:
    store = await open_store()
    start = await store.revision()
    for name in ("a", "b", "c", "d"):
        await store.create(zone(name))
    first = store.watch(from_revision=start)
    seen = await take(first, 2)
    await first.aclose()  # type: ignore[attr-defined]
    # A new client resumes from the last revision it saw: nothing lost, nothing repeated.
    other = await open_store()
    rest = await take(other.watch(from_revision=seen[-1].revision), 2)
    assert [e.resource.name for e in seen + rest] == ["a", "b", "c", "d"]


async def test_watchers_see_writes_of_other_clients(open_store: OpenStore) -> None:
    reader, writer = await open_store(), await open_store()
    events = reader.watch(from_revision=await reader.revision())
    await writer.create(zone("from-elsewhere"))
    got = await take(events, 1)
    assert got[0].resource.name == "from-elsewhere"


async def test_data_survives_reopen(open_store: OpenStore) -> None:
    first = await open_store()
    created = await first.create(zone("eu-west", region="Europe"))
    await first.close()
    again = await open_store()
    assert await again.get("Zone", "eu-west") == created


async def test_apply_at_the_operation_limit(open_store: OpenStore) -> None:
    store = await open_store()
    limit = store.limits.max_ops
    assert limit >= 128
    ok = await store.apply([Put(zone(f"z-{i}")) for i in range(limit)])
    assert len(ok.results) == limit
    before = await store.revision()
    with pytest.raises(TooLarge, match="split"):
        await store.apply([Put(zone(f"y-{i}")) for i in range(limit + 1)])
    assert await store.revision() == before
    assert len((await store.list("Zone")).items) == limit


async def test_apply_near_the_size_limit(open_store: OpenStore) -> None:
    store = await open_store()
    budget = store.limits.max_bytes
    per_secret = 60_000
    fits = int(budget * 0.9) // per_secret
    assert fits < store.limits.max_ops
    await store.apply([Put(opaque_secret(f"s-{i}", per_secret)) for i in range(fits)])
    assert len((await store.list("Secret")).items) == fits
    too_many = budget // per_secret + 2
    with pytest.raises(TooLarge, match="bytes"):
        await store.apply([Put(opaque_secret(f"t-{i}", per_secret)) for i in range(too_many)])
    assert len((await store.list("Secret")).items) == fits


async def test_smaller_configured_limits_are_enforced(open_store: OpenStore) -> None:
    store = await open_store(Limits(max_ops=3, max_bytes=1_000_000))
    with pytest.raises(TooLarge):
        await store.apply([Put(zone(f"z-{i}")) for i in range(4)])
