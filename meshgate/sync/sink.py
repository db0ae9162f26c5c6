"""The sink side of one sync stream, as a state machine with no I/O.

It opens with ``hello`` (what it holds), collects the parts of each update, and hands the
whole update to ``apply``, which checks, persists and swaps in the new state, or raises
``Rejected`` to keep the last good state; the answer is ``ack`` or ``nack``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from meshgate.sync.messages import Ack, Hello, Message, Nack, ProtocolError, Update, Upsert
from meshgate.sync.versions import content_version

MAX_UPDATE_BYTES = 256 * 1024 * 1024  # a whole update, all parts


class Rejected(Exception):
    """The update cannot be applied; nothing of it was. Details are shown at the source."""

    def __init__(self, error: str, details: tuple[str, ...] = ()) -> None:
        super().__init__(error)
        self.error, self.details = error, details

    @classmethod
    def for_documents(cls, problems: list[str]) -> Rejected:
        """One line an operator can act on (the first problem), every problem in the details."""
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return cls(f"update refused, nothing applied: {problems[0]}{more}", tuple(problems))


@dataclass(frozen=True, slots=True)
class Change:
    version: int
    upserts: tuple[Upsert, ...]
    removals: tuple[str, ...]


Apply = Callable[[Change], Awaitable[None]]


@dataclass
class SinkSession:
    apply: Apply
    max_update_bytes: int = MAX_UPDATE_BYTES
    _parts: list[Update] = field(default_factory=list)
    _size: int = 0

    @staticmethod
    def hello(known: dict[str, str], applied_version: int) -> Hello:
        return Hello(known, applied_version)

    async def on_message(self, message: Message, size: int) -> Message | None:
        if not isinstance(message, Update):
            raise ProtocolError(f"a source does not send {type(message).__name__.lower()}")
        if self._parts and self._parts[0].nonce != message.nonce:
            raise ProtocolError("a new update began before the previous one was complete")
        self._parts.append(message)
        self._size += size
        if self._size > self.max_update_bytes:
            raise ProtocolError(f"update larger than {self.max_update_bytes} bytes")
        if not message.final:
            return None
        parts, self._parts, self._size = self._parts, [], 0
        change = Change(
            message.version,
            tuple(u for p in parts for u in p.upserts),
            tuple(k for p in parts for k in p.removals),
        )
        try:
            _check_versions(change)
            await self.apply(change)
        except Rejected as rejected:
            return Nack(message.nonce, message.version, rejected.error, rejected.details)
        return Ack(message.nonce, message.version)


def _check_versions(change: Change) -> None:
    """Each document must hash to the version it came with, and appear once."""
    seen: set[str] = set()
    for upsert in change.upserts:
        if upsert.key in seen:
            raise ProtocolError(f"{upsert.key} twice in one update")
        seen.add(upsert.key)
        if content_version(upsert.doc) != upsert.version:
            raise ProtocolError(f"{upsert.key}: document does not match its version")
    if seen & set(change.removals):
        raise ProtocolError("a key both upserted and removed in one update")
