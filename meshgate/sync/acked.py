"""What a sink holds, as its source last saw it acknowledged: the version of each key.

A source stream needs this for every key it could send (10,000 documents: a dict of about
200 KiB per stream). When the view a stream serves keeps its states as immutable snapshots
(``SnapshotView``), a stream that acknowledged a whole state holds a reference to that
snapshot instead of a copy: every stream that acknowledged the same state shares one mapping.
Until then (a sink's ``hello``, or a view without snapshots) the versions are the stream's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from meshgate.sync.source import Entry

_NOTHING: Mapping[str, Entry] = {}


class Acked:
    """The versions a sink holds by key: a shared snapshot, overridden by the stream's own
    versions (``None``: the sink does not hold the key)."""

    __slots__ = ("_own", "_snapshot")

    def __init__(self, versions: Mapping[str, str]) -> None:
        self._snapshot: Mapping[str, Entry] = _NOTHING
        self._own: dict[str, str | None] = dict(versions)

    def version(self, key: str) -> str | None:
        own = self._own
        if key in own:
            return own[key]
        entry = self._snapshot.get(key)
        return None if entry is None else entry.version

    def apply(self, sent: Mapping[str, str | None]) -> None:
        """The sink acknowledged ``sent`` (key -> version, ``None``: removed)."""
        own, snapshot = self._own, self._snapshot
        for key, version in sent.items():
            if version is None and key not in snapshot:
                own.pop(key, None)
            else:
                own[key] = version

    def rebase(self, snapshot: Mapping[str, Entry]) -> None:
        """The sink holds exactly ``snapshot`` (an immutable state of the view): share it."""
        self._snapshot, self._own = snapshot, {}

    def shares(self, snapshot: Mapping[str, Entry]) -> bool:
        """Whether this is ``snapshot`` itself, with nothing of the stream's own."""
        return self._snapshot is snapshot and not self._own

    def as_dict(self) -> dict[str, str]:
        merged: dict[str, str | None] = {key: entry.version for key, entry in self._snapshot.items()}
        merged.update(self._own)
        return {key: version for key, version in merged.items() if version is not None}
