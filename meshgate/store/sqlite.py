"""The embedded store: one SQLite file, no server; survives restarts.

One writer thread owns the connection. WAL journal with ``synchronous=FULL``: an apply
is on disk before it is acknowledged. Each apply is one revision; its events are kept
for watches (``history`` revisions back), older ones are compacted.
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from meshgate.aio import wait_event
from meshgate.clock import Clock, SystemClock, rfc3339
from meshgate.resources.model import Resource
from meshgate.resources.selectors import Selector
from meshgate.store import codec, planning
from meshgate.store.errors import Compacted, NotFound, StoreError, Unavailable
from meshgate.store.interface import (
    ApplyResult,
    Delete,
    EventType,
    Limits,
    Listing,
    Op,
    OpResult,
    Outcome,
    Store,
    WatchEvent,
)

T = TypeVar("T")

DEFAULT_LIMITS = Limits(max_ops=128, max_bytes=1_572_864)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS resources (
    kind TEXT NOT NULL, name TEXT NOT NULL, revision INTEGER NOT NULL, doc TEXT NOT NULL,
    PRIMARY KEY (kind, name)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    revision INTEGER NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL,
    kind TEXT NOT NULL, name TEXT NOT NULL, doc TEXT NOT NULL, doc_revision INTEGER NOT NULL,
    PRIMARY KEY (revision, seq)) WITHOUT ROWID;
INSERT OR IGNORE INTO meta VALUES ('revision', 0), ('compacted', 0);
"""


class SqliteStore(Store):
    def __init__(
        self,
        path: Path,
        *,
        limits: Limits = DEFAULT_LIMITS,
        history: int = 100_000,
        busy_timeout: float = 2.0,
        poll_interval: float = 0.5,
        clock: Clock | None = None,
    ) -> None:
        self.path = path
        self.limits = limits
        self._history = history
        self._busy_timeout = busy_timeout
        self._poll_interval = poll_interval
        self._clock = clock or SystemClock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        self._conn: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None
        self._changed = asyncio.Event()
        self._closed = False

    @classmethod
    async def open(cls, path: Path, **kwargs: object) -> SqliteStore:
        store = cls(path, **kwargs)  # type: ignore[arg-type]
        await store._run(store._connect)
        return store

    # -- plumbing ---------------------------------------------------------------------

    def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(_SCHEMA)
        os.chmod(self.path, 0o600)
        st = os.stat(self.path)
        self._identity = (st.st_dev, st.st_ino)
        self._conn = conn

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise Unavailable("store is closed")
        try:
            st = os.stat(self.path)
        except OSError:
            st = None
        if st is None or (st.st_dev, st.st_ino) != self._identity:
            raise Unavailable(
                f"the store file {self.path} was removed or replaced while in use; "
                "refusing reads and writes until the global CP restarts on a good file",
                retry_after=5.0,
            )
        return self._conn

    async def _run(self, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn)
        except sqlite3.OperationalError as exc:
            raise Unavailable(f"SQLite store {self.path}: {exc}", retry_after=1.0) from exc
        except sqlite3.DatabaseError as exc:
            raise Unavailable(f"SQLite store {self.path} is damaged: {exc}", retry_after=5.0) from exc

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    # -- reads --------------------------------------------------------------------------

    async def revision(self) -> int:
        return await self._run(lambda: _meta(self._db(), "revision"))

    async def get(self, kind: str, name: str) -> Resource:
        def read() -> Resource:
            row = (
                self._db()
                .execute("SELECT revision, doc FROM resources WHERE kind=? AND name=?", (kind, name))
                .fetchone()
            )
            if row is None:
                raise NotFound(kind, name)
            return codec.decode(row[1], row[0])

        return await self._run(read)

    async def list(self, kind: str | None = None, *, selector: Selector | None = None) -> Listing:
        def read() -> Listing:
            db = self._db()
            db.execute("BEGIN")
            try:
                revision = _meta(db, "revision")
                if kind is None:
                    rows = db.execute("SELECT revision, doc FROM resources ORDER BY kind, name")
                else:
                    rows = db.execute(
                        "SELECT revision, doc FROM resources WHERE kind=? ORDER BY name", (kind,)
                    )
                items = [codec.decode(doc, rev) for rev, doc in rows.fetchall()]
            finally:
                db.execute("COMMIT")
            if selector is not None:
                items = [r for r in items if selector.matches(r.labels)]
            return Listing(tuple(items), revision)

        return await self._run(read)

    # -- writes -------------------------------------------------------------------------

    async def apply(self, ops: Sequence[Op]) -> ApplyResult:
        planning.check_batch(ops, self.limits, 0)  # counts and duplicates; sizes once encoded
        now = rfc3339(self._clock.now())
        result = await self._run(lambda: self._apply(ops, now))
        if result.results and any(r.outcome is not Outcome.UNCHANGED for r in result.results):
            self._notify()
        return result

    def _apply(self, ops: Sequence[Op], now: str) -> ApplyResult:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            revision = _meta(db, "revision") + 1
            results: builtins.list[OpResult] = []
            # (event, the resource shown in the event, its encoded document; None: a delete)
            writes: builtins.list[tuple[EventType, Resource, str | None]] = []
            for op in ops:
                kind, name = planning.op_key(op)
                row = db.execute(
                    "SELECT revision, doc FROM resources WHERE kind=? AND name=?", (kind, name)
                ).fetchone()
                current = codec.decode(row[1], row[0]) if row else None
                if isinstance(op, Delete):
                    last = planning.plan_delete(op, current)
                    writes.append((EventType.DELETED, last, None))
                    results.append(OpResult(Outcome.DELETED, last))
                    continue
                outcome, target = planning.plan_put(op, current, now)
                if outcome is Outcome.UNCHANGED:
                    results.append(OpResult(outcome, target))
                    continue
                stored = target.with_store_fields(
                    revision=revision, generation=target.generation, created=target.created
                )
                kind_of = EventType.ADDED if outcome is Outcome.CREATED else EventType.MODIFIED
                writes.append((kind_of, stored, codec.encode(stored).decode()))
                results.append(OpResult(outcome, stored))
            if not writes:
                db.execute("ROLLBACK")
                return ApplyResult(revision - 1, tuple(results))
            planning.check_batch(ops, self.limits, sum(len(text or "") for _e, _r, text in writes))
            for seq, (event, shown, text) in enumerate(writes):
                if text is None:
                    db.execute("DELETE FROM resources WHERE kind=? AND name=?", shown.key)
                else:
                    db.execute(
                        "INSERT OR REPLACE INTO resources VALUES (?, ?, ?, ?)", (*shown.key, revision, text)
                    )
                db.execute(
                    "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        revision,
                        seq,
                        event.value,
                        *shown.key,
                        text or codec.encode(shown).decode(),
                        shown.revision,
                    ),
                )
            db.execute("UPDATE meta SET value=? WHERE key='revision'", (revision,))
            floor = revision - self._history
            if floor > 0:
                db.execute("DELETE FROM events WHERE revision <= ?", (floor,))
                db.execute("UPDATE meta SET value=max(value, ?) WHERE key='compacted'", (floor,))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return ApplyResult(revision, tuple(results))

    # -- watch --------------------------------------------------------------------------

    async def watch(
        self, *, from_revision: int, kinds: Collection[str] | None = None
    ) -> AsyncIterator[WatchEvent]:
        wanted = frozenset(kinds) if kinds is not None else None
        last = from_revision
        while True:
            waiter = self._changed
            rows = await self._run(functools.partial(self._events_after, last))
            for revision, type_, kind, doc, doc_revision in rows:
                last = revision
                if wanted is None or kind in wanted:  # decode only what the watcher wants
                    yield WatchEvent(EventType(type_), codec.decode(doc, doc_revision), revision)
            if rows:
                continue
            await wait_event(waiter, self._poll_interval)

    def _events_after(self, revision: int) -> builtins.list[tuple[int, str, str, str, int]]:
        db = self._db()
        compacted = _meta(db, "compacted")
        if revision < compacted:
            raise Compacted(revision, compacted)
        return db.execute(
            "SELECT revision, type, kind, doc, doc_revision FROM events "
            "WHERE revision > ? AND revision <= ? ORDER BY revision, seq",
            (revision, revision + 256),
        ).fetchall()

    async def close(self) -> None:
        if self._closed:  # closing twice is fine
            return
        self._closed = True

        def close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        try:
            await self._run(close)
        finally:
            self._executor.shutdown(wait=True)


def _meta(db: sqlite3.Connection, key: str) -> int:
    row = db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
    if row is None:
        raise StoreError(f"store metadata {key!r} missing")
    value: int = row[0]
    return value
