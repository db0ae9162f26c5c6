"""The source side of one sync stream, as a state machine with no I/O.

Feed it what the sink says (``on_message``) and which keys changed (``mark_dirty``); ask it
what to send (``poll``). It keeps what the sink has acknowledged, so after a reconnect (a new
session whose ``hello`` lists what the sink holds) only differences are sent.

Every key where the sink may differ from the view is dirty or in flight, and ``poll`` takes
every dirty key: once the sink acknowledges an update it holds the view as it was at that
``poll``. A ``SnapshotView`` keeps each state as an immutable mapping, so the session then keeps
a reference to it (shared by every session of the view at that state) instead of a copy.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from meshgate.sync.acked import Acked
from meshgate.sync.messages import Ack, Hello, Message, Nack, ProtocolError, Update, Upsert


@dataclass(frozen=True, slots=True)
class Entry:
    version: str  # content version
    doc: dict[str, Any]
    size: int  # encoded size of doc, for splitting updates
    text: str | None = None  # doc already encoded as JSON: sent as is to every sink


class SourceView(Protocol):
    """What this sink may see of the source."""

    @property
    def version(self) -> int: ...

    def entry(self, key: str) -> Entry | None: ...

    def keys(self) -> Iterable[str]: ...


@runtime_checkable
class SnapshotView(SourceView, Protocol):
    """A view whose every state is an immutable mapping: a change makes a new one."""

    def snapshot(self) -> Mapping[str, Entry]:
        """The current entries by key; never changed after it is returned."""
        ...


@dataclass(frozen=True)
class SourceSettings:
    max_message_bytes: int = 1024 * 1024  # an update bigger than this goes in parts
    nack_backoff: float = 1.0
    nack_backoff_max: float = 60.0


@dataclass(frozen=True, slots=True)
class Delivered:
    """An acknowledged update: how many changes and how long the oldest waited."""

    version: int
    changes: int
    latencies: tuple[float, ...]


@dataclass(slots=True)
class _InFlight:
    nonce: str
    version: int
    sent: dict[str, str | None]  # key -> version sent (None: removed)
    changed_at: dict[str, float]
    snapshot: Mapping[str, Entry] | None  # the view's state, if a SnapshotView: what an ACK makes


@dataclass
class SourceStats:
    updates_sent: int = 0
    acks: int = 0
    nacks: int = 0
    applied_version: int = 0
    last_ack_at: float | None = None
    last_nack: Nack | None = None
    last_nack_at: float | None = None


@dataclass
class SourceSession:
    view: SourceView
    now: Callable[[], float]
    settings: SourceSettings = field(default_factory=SourceSettings)
    stats: SourceStats = field(default_factory=SourceStats)
    _known: Acked | None = None  # None until hello
    _dirty: dict[str, float] = field(default_factory=dict)  # key -> when it first changed
    _inflight: _InFlight | None = None
    _retry_at: float = 0.0
    _backoff: float = 0.0
    _snapshot: Callable[[], Mapping[str, Entry]] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if isinstance(self.view, SnapshotView):  # once: a protocol check is slow
            self._snapshot = self.view.snapshot

    @property
    def ready(self) -> bool:
        return self._known is not None

    @property
    def known(self) -> dict[str, str]:
        return {} if self._known is None else self._known.as_dict()

    def shares(self, snapshot: Mapping[str, Entry]) -> bool:
        """Whether what the sink holds is kept as ``snapshot`` itself (a view's state, shared)."""
        return self._known is not None and self._known.shares(snapshot)

    def pending_since(self) -> float | None:
        """When the oldest change not yet acknowledged by the sink was seen, if any."""
        times = list(self._dirty.values())
        if self._inflight is not None:
            times.extend(self._inflight.changed_at.values())
        return min(times) if times else None

    def next_retry(self) -> float | None:
        """After a NACK, while changes wait for the backoff: when to poll again without being
        woken (a time already past means at once). None: poll when woken.

        Deliberately not compared with the clock: a timer may fire just before the backoff
        ends (uvloop's do, by up to a millisecond), so poll sends nothing; asked a moment later,
        a "backoff over, nothing to wait for" answer would leave those changes waiting until
        the next one arrives."""
        if self._retry_at and self._dirty and self._inflight is None:
            return self._retry_at
        return None

    def mark_dirty(self, keys: Iterable[str]) -> None:
        at = self.now()
        for key in keys:
            self._dirty.setdefault(key, at)

    def on_message(self, message: Message) -> Delivered | None:
        match message:
            case Hello(known=known, applied_version=applied):
                if self._known is not None:
                    raise ProtocolError("hello sent twice")
                self._known = Acked(known)
                self.stats.applied_version = applied
                self.mark_dirty(set(known) | set(self.view.keys()))
                return None
            case Ack(nonce=nonce, version=version):
                flight = self._take(nonce)
                assert self._known is not None
                if flight.snapshot is not None:
                    self._known.rebase(flight.snapshot)
                else:
                    self._known.apply(flight.sent)
                self.stats.acks += 1
                self.stats.applied_version = version
                self._backoff, self._retry_at = 0.0, 0.0
                now = self.now()
                self.stats.last_ack_at = now
                return Delivered(
                    version, len(flight.sent), tuple(now - t for t in flight.changed_at.values())
                )
            case Nack():
                flight = self._take(message.nonce)
                for key, at in flight.changed_at.items():  # still different: send again later
                    self._dirty.setdefault(key, at)
                self.stats.nacks += 1
                self.stats.last_nack = message
                self.stats.last_nack_at = self.now()
                self._backoff = min(
                    max(self._backoff * 2, self.settings.nack_backoff), self.settings.nack_backoff_max
                )
                self._retry_at = self.now() + self._backoff
                return None
            case Update():
                raise ProtocolError("a sink does not send updates")
        raise ProtocolError(f"unexpected message {type(message).__name__}")

    def poll(self) -> list[Update]:
        """The next update to send, in parts, or nothing (not ready, busy, backing off, no change)."""
        known = self._known
        if known is None or self._inflight is not None or self.now() < self._retry_at:
            return []
        snapshot = None if self._snapshot is None else self._snapshot()
        entry_of = self.view.entry if snapshot is None else snapshot.get
        changes: dict[str, Entry | None] = {}
        changed_at: dict[str, float] = {}
        for key, at in self._dirty.items():
            entry = entry_of(key)
            if (entry.version if entry else None) != known.version(key):
                changes[key] = entry
                changed_at[key] = at
        self._dirty.clear()
        if not changes:
            if snapshot is not None:
                known.rebase(snapshot)  # nothing differs: the sink holds this state
            return []
        nonce = secrets.token_urlsafe(12)
        version = self.view.version
        sent = {k: (e.version if e else None) for k, e in changes.items()}
        self._inflight = _InFlight(nonce, version, sent, changed_at, snapshot)
        self.stats.updates_sent += 1
        return _split(nonce, version, changes, self.settings.max_message_bytes)

    def _take(self, nonce: str) -> _InFlight:
        flight = self._inflight
        if flight is None or flight.nonce != nonce:
            raise ProtocolError(f"acknowledgement for unknown nonce {nonce!r}")
        self._inflight = None
        return flight


def _split(nonce: str, version: int, changes: dict[str, Entry | None], budget: int) -> list[Update]:
    parts: list[Update] = []
    batch: list[Upsert] = []
    size = 0
    for key, entry in sorted(changes.items()):
        if entry is None:
            continue
        if batch and size + entry.size > budget:
            parts.append(Update(nonce, version, tuple(batch), (), final=False))
            batch, size = [], 0
        batch.append(Upsert(key, entry.version, entry.doc, entry.text))
        size += entry.size + len(key) + 48
    removals = tuple(sorted(k for k, e in changes.items() if e is None))
    parts.append(Update(nonce, version, tuple(batch), removals, final=True))
    return parts
