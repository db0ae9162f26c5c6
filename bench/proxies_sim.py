"""Simulated local proxies that speak the real proxy protocol to a real zone CP.

A ``SimProxy`` is ``meshgate proxy run --role local`` reduced to its link's protocol: it
enrolls with a join token through the zone CP's enrollment endpoint (``zones.enroll.enroll``:
the CA fetched and pinned by the token's fingerprint, a CSR, a certificate for its service's
identity), then opens the configuration stream as ``zones.link.Link`` does (mTLS with its own
certificate, the zone CP's identity checked, ``{"type":"sync"}``, a ``hello``), and answers
every update through a ``SinkSession``, which checks each document against its content version
(sha256) before the apply and ACKs after it. Only the apply is reduced: it notes the time and
looks for the write being measured; nothing is built, kept or written to disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from bench.sync_propagation import Snapshot
from meshgate.pki.keys import certificate_from_pem
from meshgate.sync.frames import StreamChannel
from meshgate.sync.messages import Hello, Upsert
from meshgate.sync.runner import run_sink
from meshgate.sync.sink import Change, SinkSession
from zones.enroll import ZoneCP, check_zone_cp, enroll, mtls_context, open_channel
from zones.state import Identity


@dataclass
class ProxyProbe:
    """The write being measured, as proxies see it: the key of the document it changes and the
    value it gives that document's ``spec.protocol``; when each proxy applied it."""

    proxies: int
    key: str = ""
    protocol: str = ""
    hits: dict[str, float] = field(default_factory=dict)  # proxy name -> monotonic time
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def arm(self, key: str, protocol: str) -> None:
        self.key, self.protocol = key, protocol
        self.hits = {}
        self.done.clear()

    def disarm(self) -> None:
        self.key, self.protocol = "", ""

    def seen(self, proxy: SimProxy, upserts: Iterable[Upsert], at: float) -> None:
        if not self.key or proxy.name in self.hits:
            return
        for upsert in upserts:
            if upsert.key == self.key and _protocol(upsert.doc) == self.protocol:
                self.hits[proxy.name] = at
                proxy.writes_applied += 1
                if len(self.hits) >= self.proxies:
                    self.done.set()
                return


def _protocol(document: dict[str, Any]) -> str | None:
    with contextlib.suppress(KeyError, TypeError):
        return str(document["spec"]["protocol"])
    return None


class TimedChannel:
    """A proxy's stream channel that notes when messages arrive (while ``recording``) and
    tells the proxy after each message it sends."""

    def __init__(self, inner: StreamChannel, sent: Callable[[], None]) -> None:
        self._inner, self._sent = inner, sent
        self.recording = True
        self.frames: list[tuple[float, int]] = []  # (arrival, characters)

    async def send(self, text: str) -> None:
        await self._inner.send(text)
        self._sent()

    async def receive(self) -> str:
        text = await self._inner.receive()
        if self.recording:
            self.frames.append((time.monotonic(), len(text)))
        return text

    async def refuse(self, reason: str) -> None:
        await self._inner.refuse(reason)


class SimProxy:
    """One local proxy of ``zone``, fronting ``service``, connected to a real zone CP."""

    def __init__(self, name: str, zone: str, zone_cp: ZoneCP, service: str, probe: ProxyProbe) -> None:
        self.name, self.zone, self.zone_cp, self.service, self.probe = name, zone, zone_cp, service, probe
        self.identity: Identity | None = None
        self.version = 0
        self.updates = 0  # updates applied since the last connect, the snapshot included
        self.writes_applied = 0  # measured writes this proxy applied (over the whole run)
        self.snapshot: Snapshot | None = None
        self.has_snapshot = asyncio.Event()
        self.failed = asyncio.Event()
        self.error = ""
        self._roots: list[Any] = []
        self._channel: TimedChannel | None = None
        self._awaiting_ack = False
        self._task: asyncio.Task[None] | None = None

    async def enroll(self, token: str) -> float:
        """Enroll as a real proxy does at its first start; returns the seconds it took."""
        started = time.monotonic()
        self.identity = await enroll(self.zone_cp, token, "local", self.service, self.name, None)
        self._roots = [certificate_from_pem(pem.encode()) for pem in self.identity.roots_pem]
        return time.monotonic() - started

    def connect(self) -> None:
        """Open the configuration stream with an empty hello (a proxy's first connection)."""
        assert self._task is None, "close first"
        self.has_snapshot.clear()
        self.failed.clear()
        self.error = ""
        self._awaiting_ack = False
        self.updates = 0
        self.snapshot = Snapshot(opened=time.monotonic())
        self._task = asyncio.create_task(self._guard(), name=f"proxy-{self.name}")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _guard(self) -> None:
        try:
            await self._stream()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            self.failed.set()

    async def _stream(self) -> None:
        """What ``zones.link.Link._keep_syncing`` does on one connection."""
        identity = self.identity
        assert identity is not None, "enroll first"
        assert self.snapshot is not None
        channel = await open_channel(self.zone_cp, mtls_context(identity))
        try:
            check_zone_cp(channel, self._roots, identity.trust_domain, identity.zone)
            await channel.send('{"type":"sync"}')
            self.snapshot.connected = time.monotonic()
            self._channel = TimedChannel(channel, self._sent)
            await run_sink(self._channel, SinkSession(self._apply), Hello({}, 0))
        finally:
            await channel.close()
        raise ConnectionError("the configuration stream ended")

    async def _apply(self, change: Change) -> None:
        at = time.monotonic()
        self.version = change.version
        self.updates += 1
        if self.has_snapshot.is_set() or self._awaiting_ack:
            self.probe.seen(self, change.upserts, at)
            return
        snapshot, channel = self.snapshot, self._channel
        assert snapshot is not None
        assert channel is not None
        channel.recording = False
        frames = channel.frames
        snapshot.first_frame, snapshot.last_frame = frames[0][0], frames[-1][0]
        snapshot.parts = len(frames)
        snapshot.characters = sum(size for _, size in frames)
        snapshot.resources = len(change.upserts)
        snapshot.applied = at
        channel.frames = []
        self._awaiting_ack = True

    def _sent(self) -> None:
        """After each message this proxy sends on the stream: the first after the snapshot's
        apply is its ACK."""
        if self._awaiting_ack:
            self._awaiting_ack = False
            assert self.snapshot is not None
            self.snapshot.acked = time.monotonic()
            self.has_snapshot.set()

    async def wait_snapshot(self, timeout: float) -> Snapshot:
        waits = [asyncio.create_task(self.has_snapshot.wait()), asyncio.create_task(self.failed.wait())]
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for task in waits:
            task.cancel()
        if not self.has_snapshot.is_set():
            raise RuntimeError(f"proxy {self.name}: no snapshot ({self.error or 'timed out'})")
        assert self.snapshot is not None
        return self.snapshot
