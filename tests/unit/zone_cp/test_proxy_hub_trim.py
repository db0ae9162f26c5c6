"""After a proxy acknowledges its snapshot, the hub hands the memory it took to send back
(``release_memory``, glibc's ``malloc_trim`` in a zone CP); after a small update it does not."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from meshgate.clock import SystemClock
from meshgate.resources.model import Resource
from meshgate.store.mirror import Change
from meshgate.sync import messages
from meshgate.sync.messages import Ack, Hello, Update
from meshgate.sync.runner import Closed
from tests.support.factories import resource
from zone_cp.metrics import ZoneMetrics
from zone_cp.proxies.hub import ProxyHub, ProxyIdentity


class Mirror:
    """What the hub reads of a StoreMirror: the resources and change notifications."""

    def __init__(self, *resources: Resource) -> None:
        self.resources = {r.key: r for r in resources}
        self.listeners: list[Callable[[list[Change]], None]] = []

    def subscribe(self, listener: Callable[[list[Change]], None]) -> Callable[[], None]:
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener)

    def put(self, r: Resource) -> None:
        self.resources[r.key] = r
        for listener in self.listeners:
            listener([(r.key, r)])


class Channel:
    def __init__(self) -> None:
        self.incoming: asyncio.Queue[str | None] = asyncio.Queue()
        self.sent: asyncio.Queue[str] = asyncio.Queue()

    async def send(self, text: str) -> None:
        await self.sent.put(text)

    async def receive(self) -> str:
        text = await self.incoming.get()
        if text is None:
            raise Closed("test over")
        return text

    async def refuse(self, reason: str) -> None:
        raise AssertionError(reason)

    async def ack_next_update(self) -> Update:
        update = messages.decode(await self.sent.get())
        assert isinstance(update, Update)
        await self.incoming.put(messages.encode(Ack(update.nonce, update.version)))
        return update


def service(name: str) -> Resource:
    return resource("Service", name, {"ports": [{"name": "http", "port": 8080}]})


async def test_the_memory_of_a_snapshot_is_released_once_it_is_acknowledged() -> None:
    mirror = Mirror(resource("Mesh", "default", {"trustDomain": "td"}), service("a"), service("b"))
    released: list[int] = []
    hub = ProxyHub(
        "z", mirror, SystemClock(), ZoneMetrics(), debounce=0.0,  # type: ignore[arg-type]
        trim_after_changes=3, release_memory=lambda: released.append(1),
    )  # fmt: skip
    await hub.start()
    channel = Channel()
    identity = ProxyIdentity("local", "spiffe://td/svc/a", service="a")
    serving = asyncio.create_task(hub.serve(channel, identity, lambda: None))
    await channel.incoming.put(messages.encode(Hello({})))
    snapshot = await channel.ack_next_update()
    assert len(snapshot.upserts) == 3  # Trust/mesh and two clusters
    mirror.put(service("c"))
    delta = await channel.ack_next_update()
    assert [u.key for u in delta.upserts] == ["Cluster/c"]
    await channel.incoming.put(None)
    await serving
    await hub.stop()
    assert released == [1]  # the snapshot's ACK, not the delta's
