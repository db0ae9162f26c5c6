"""The etcd store against real etcd processes: restarts, a leader killed, a cluster gone.

Each test starts its own etcd (or cluster) under ``tmp_path``: these tests stop, kill and
compact it, which the session server shared by the contract suite must not see.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from meshgate.resources.model import Resource
from meshgate.store.errors import Compacted, Unavailable
from meshgate.store.etcd import EtcdStore
from meshgate.store.etcd_watch import Reconnect
from meshgate.store.interface import OpResult, Put, Store, WatchEvent
from tests.support.etcd import EtcdCluster, EtcdServer, etcd_binary
from tests.support.factories import zone

pytestmark = pytest.mark.etcd


def unique_prefix() -> str:
    return f"/it-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EtcdServer]:
    etcd_binary()
    running = EtcdServer(tmp_path / "single").start()
    try:
        yield running
    finally:
        running.stop()
        running.dump_log()  # pytest shows it only when the test failed


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[EtcdCluster]:
    etcd_binary()
    running = EtcdCluster(tmp_path / "cluster", size=3).start()
    try:
        yield running
    finally:
        running.stop()
        running.dump_logs()  # pytest shows them only when the test failed


async def put_until_acknowledged(
    store: Store, resource: Resource, *, deadline: float = 30.0
) -> tuple[OpResult, list[str]]:
    """What a careful client does: retry a put (idempotent) while the store is unavailable."""
    failures: list[str] = []
    end = time.monotonic() + deadline
    while True:
        try:
            return await store.put(resource), failures
        except Unavailable as exc:
            failures.append(type(exc).__name__)
            if time.monotonic() > end:
                raise
            await asyncio.sleep(0.1)


async def collect(events: AsyncIterator[WatchEvent], into: list[WatchEvent], n: int) -> None:
    async for event in events:
        into.append(event)
        if len(into) >= n:
            return


@pytest.mark.slow
@pytest.mark.parametrize("how", ["graceful", "crash"])
async def test_watch_keeps_every_event_across_a_server_restart(server: EtcdServer, how: str) -> None:
    prefix = unique_prefix()
    writer = await EtcdStore.open(server.endpoints, prefix=prefix)
    watcher = await EtcdStore.open(server.endpoints, prefix=prefix)
    try:
        total, restart_at = 60, 20
        seen: list[WatchEvent] = []
        events = watcher.watch(from_revision=await watcher.revision())
        consumer = asyncio.create_task(collect(events, seen, total))

        def restart() -> float:
            began = time.monotonic()
            if how == "crash":
                server.kill()
                server.start()
            else:
                server.restart()
            return time.monotonic() - began

        revisions: list[int] = []
        restarting: asyncio.Future[float] | None = None
        for i in range(total):
            if i == restart_at:  # restart while the writes go on
                restarting = asyncio.ensure_future(asyncio.to_thread(restart))
            result, _ = await put_until_acknowledged(writer, zone(f"z-{i:03d}"))
            assert result.resource.revision is not None
            revisions.append(result.resource.revision)
        assert restarting is not None
        took = await restarting
        await asyncio.wait_for(consumer, 30)
        print(f"\n{how} restart took {took:.2f} s; the watcher got {len(seen)} events")

        assert [e.resource.name for e in seen] == [f"z-{i:03d}" for i in range(total)]
        assert [e.revision for e in seen] == revisions
        assert revisions == sorted(set(revisions))  # each revision exactly once, in order
    finally:
        await writer.close()
        await watcher.close()


@pytest.mark.slow
async def test_leader_killed_during_writes_loses_no_acknowledged_write(
    cluster: EtcdCluster,
) -> None:
    prefix = unique_prefix()
    store = await EtcdStore.open(cluster.endpoints, prefix=prefix)
    watcher = await EtcdStore.open(cluster.endpoints, prefix=prefix)
    seen: list[WatchEvent] = []
    total = 100
    acked: dict[str, int] = {}
    ack_times: list[float] = []
    failures: list[str] = []
    killed_at: list[float] = []
    enough = asyncio.Event()

    async def kill_the_leader_when_enough() -> None:
        await enough.wait()
        leader = await asyncio.to_thread(cluster.leader)
        cluster.kill(leader)  # a write is in flight: the writer never waits for this
        killed_at.append(time.monotonic())
        print(f"\nkilled leader {leader.name} after {len(acked)} acknowledged writes")

    try:
        events = watcher.watch(from_revision=await watcher.revision())
        consumer = asyncio.create_task(collect(events, seen, total))
        killer = asyncio.create_task(kill_the_leader_when_enough())
        for i in range(total):
            if i == 30:
                enough.set()
            name = f"w-{i:03d}"
            result, failed = await put_until_acknowledged(store, zone(name))
            failures += failed
            assert result.resource.revision is not None
            acked[name] = result.resource.revision
            ack_times.append(time.monotonic())
        await killer

        first_after = min(t for t in ack_times if t > killed_at[0])
        gap = first_after - killed_at[0]
        longest = max(b - a for a, b in itertools.pairwise(ack_times))
        print(
            f"writes resumed {gap:.2f} s after the kill (longest gap between acks "
            f"{longest:.2f} s); failed attempts: {failures}"
        )
        assert gap < 20.0

        print(f"new leader: {(await asyncio.to_thread(cluster.leader)).name}")
        stored = {r.name: r.revision for r in (await store.list("Zone")).items}
        assert stored == acked

        await asyncio.wait_for(consumer, 30)  # and a watcher saw each write exactly once
        assert [(e.resource.name, e.revision) for e in seen] == list(acked.items())
    finally:
        await store.close()
        await watcher.close()


@pytest.mark.slow
@pytest.mark.parametrize("how", ["killed", "frozen"])
async def test_with_every_member_down_calls_fail_within_the_timeout(cluster: EtcdCluster, how: str) -> None:
    timeout, margin = 3.0, 1.5
    store = await EtcdStore.open(cluster.endpoints, prefix=unique_prefix(), timeout=timeout)
    try:
        await store.create(zone("before"))
        for member in cluster.members:
            if how == "killed":
                member.kill()
            else:
                member.pause()  # sockets stay open, nothing answers
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "get": lambda: store.get("Zone", "before"),
            "apply": lambda: store.apply([Put(zone("after"))]),
            "list": lambda: store.list(),
            "revision": lambda: store.revision(),
        }
        for name, call in calls.items():
            began = time.monotonic()
            with pytest.raises(Unavailable) as info:
                await asyncio.wait_for(call(), timeout + 10)  # a hang fails here, not forever
            took = time.monotonic() - began
            print(f"\n{how}: {name} raised {type(info.value).__name__} after {took:.2f} s")
            assert took < timeout + margin
    finally:
        for member in cluster.members:
            member.resume()
        await store.close()


@pytest.mark.parametrize("how", ["killed", "frozen"])
async def test_watch_gives_up_when_etcd_stays_away(server: EtcdServer, how: str) -> None:
    # Short clocks: a frozen member keeps its connections open and never answers.
    reconnect = Reconnect(outage_deadline=1.0, open_timeout=0.5, quiet_probe=0.5, probe_timeout=0.5)
    store = await EtcdStore.open(server.endpoints, prefix=unique_prefix(), watch_reconnect=reconnect)
    try:
        events = store.watch(from_revision=await store.revision())
        await store.put(zone("a"))
        assert (await asyncio.wait_for(anext(events), 10)).resource.name == "a"
        if how == "killed":
            server.kill()
        else:
            server.pause()
        began = time.monotonic()
        with pytest.raises(Unavailable) as info:
            await asyncio.wait_for(anext(events), 20)
        took = time.monotonic() - began
        print(f"\n{how}: the watch raised Unavailable after {took:.2f} s: {info.value}")
        assert took >= reconnect.outage_deadline
    finally:
        server.resume()
        await store.close()


async def test_watch_from_a_compacted_revision_raises_compacted(server: EtcdServer) -> None:
    store = await EtcdStore.open(server.endpoints, prefix=unique_prefix())
    try:
        old = await store.revision()
        for i in range(5):
            await store.put(zone(f"z-{i}"))
        now = await store.revision()
        await asyncio.to_thread(server.compact, now)
        events = store.watch(from_revision=old)
        with pytest.raises(Compacted) as info:
            await asyncio.wait_for(anext(events), 10)
        assert info.value.oldest == now

        # From the compaction point on, the watch works.
        later = store.watch(from_revision=now)
        await store.put(zone("after"))
        event = await asyncio.wait_for(anext(later), 10)
        assert event.resource.name == "after"
        await later.aclose()  # type: ignore[attr-defined]
    finally:
        await store.close()


async def test_concurrent_writers_on_one_key_all_land(etcd_server: EtcdServer) -> None:
    """Puts without a revision race on one key: each loser re-plans on the state that won."""
    prefix = unique_prefix()
    stores = [await EtcdStore.open(etcd_server.endpoints, prefix=prefix) for _ in range(4)]
    try:

        async def writer(index: int, store: Store) -> list[int]:
            revisions = []
            for n in range(10):
                result = await store.put(zone("hot", writer=str(index), n=str(n)))
                assert result.resource.revision is not None
                revisions.append(result.resource.revision)
            return revisions

        per_writer = await asyncio.gather(*(writer(i, s) for i, s in enumerate(stores)))
        every = [r for revisions in per_writer for r in revisions]
        assert len(set(every)) == len(every) == 40  # each put its own revision
        final = await stores[0].get("Zone", "hot")
        assert final.revision == max(every)
        assert final.generation == 1  # only labels changed
    finally:
        for store in stores:
            await store.close()
