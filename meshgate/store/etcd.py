"""The etcd store: each resource one key under a prefix, each apply one etcd transaction.

Keys are ``{prefix}/r/{kind}/{name}``, values ``codec.encode(resource)``. A resource's
revision is its key's ``mod_revision``; the store revision is etcd's header revision (one
counter for the whole etcd keyspace, so it also moves when other prefixes change).

An apply reads every key it touches in one read-only transaction (one snapshot), plans
each op with ``planning``, then commits one transaction guarded by a compare per key
(``mod_revision`` as read, or ``create_revision == 0`` when absent). If another writer got
there first the compares fail and nothing is written; the transaction's failure branch
reads the keys again, and the apply is planned again on that state, a bounded number of
times with short jittered pauses.

Every call is bounded by ``timeout``. Calls that cannot have changed anything are retried
inside that budget; a write that failed after it was sent is never retried here: it
raises ``Indeterminate``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import grpc.aio
from etcd3aio._protobuf import Compare, TxnRequest
from etcd3aio.connections import ConnectionManager
from etcd3aio.kv import KVService, prefix_range_end

from meshgate.clock import Clock, SystemClock, rfc3339
from meshgate.resources.model import Resource
from meshgate.resources.selectors import Selector
from meshgate.store import codec, etcd_endpoints, etcd_watch, planning
from meshgate.store.errors import Compacted, Conflict, NotFound, StoreError, Unavailable
from meshgate.store.etcd_errors import Failure, cancelled_by_grpc, classify, retryable
from meshgate.store.interface import (
    ApplyResult,
    Delete,
    EventType,
    Limits,
    Listing,
    Op,
    OpResult,
    Outcome,
    Put,
    Store,
    WatchEvent,
)

T = TypeVar("T")

# etcd's server defaults: --max-txn-ops 128, --max-request-bytes 1.5 MiB.
DEFAULT_LIMITS = Limits(max_ops=128, max_bytes=1_572_864)
CONTENTION_ATTEMPTS = 16
_DELETE = 1  # mvccpb.Event.EventType.DELETE

_CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_receive_message_length", -1),  # a whole-store list can exceed gRPC's 4 MiB
    ("grpc.initial_reconnect_backoff_ms", 250),  # come back soon after a member restarts
    ("grpc.max_reconnect_backoff_ms", 4000),
]


@dataclass(frozen=True, slots=True)
class _Snapshot:
    revision: int
    current: dict[bytes, tuple[Resource | None, int]]  # key -> (resource, mod_revision)


@dataclass(slots=True)
class _Plan:
    compares: list[Any] = field(default_factory=list)
    writes: list[Any] = field(default_factory=list)
    outcomes: list[tuple[Outcome, Resource]] = field(default_factory=list)

    def results(self, revision: int) -> tuple[OpResult, ...]:
        written = (Outcome.CREATED, Outcome.UPDATED)
        return tuple(
            OpResult(
                outcome,
                resource.with_store_fields(
                    revision=revision, generation=resource.generation, created=resource.created
                )
                if outcome in written
                else resource,
            )
            for outcome, resource in self.outcomes
        )


class EtcdStore(Store):
    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        endpoints: Sequence[str],
        prefix: str,
        limits: Limits,
        timeout: float,
        clock: Clock,
        reconnect: etcd_watch.Reconnect,
    ) -> None:
        self.limits = limits
        self._channel = channel
        self._kv = KVService(channel, max_attempts=1)
        self._where = ",".join(endpoints)
        self._root = f"{prefix.rstrip('/')}/r/"
        self._timeout = timeout
        self._clock = clock
        self._reconnect = reconnect
        self._closed = False

    @classmethod
    async def open(
        cls,
        endpoints: Sequence[str],
        *,
        prefix: str = "/meshgate",
        limits: Limits = DEFAULT_LIMITS,
        timeout: float = 8.0,
        clock: Clock | None = None,
        ca_cert: bytes | None = None,
        cert_chain: bytes | None = None,
        cert_key: bytes | None = None,
        tls_server_name: str | None = None,
        watch_reconnect: etcd_watch.Reconnect | None = None,
    ) -> EtcdStore:
        """Connect and check that etcd answers (raises Unavailable if it does not)."""
        dial = await etcd_endpoints.resolve(
            endpoints, tls=ca_cert is not None, tls_server_name=tls_server_name
        )
        manager = ConnectionManager(dial.addresses)
        manager.grpc_options.extend(_CHANNEL_OPTIONS)
        channel = manager.get_channel(
            ca_cert=ca_cert,
            cert_key=cert_key,
            cert_chain=cert_chain,
            tls_server_name=dial.tls_server_name,
        )
        store = cls(
            channel,
            endpoints=endpoints,
            prefix=prefix,
            limits=limits,
            timeout=timeout,
            clock=clock or SystemClock(),
            reconnect=watch_reconnect or etcd_watch.Reconnect(),
        )
        try:
            await store.revision()
        except BaseException:
            await store.close()
            raise
        return store

    # -- keys and values -----------------------------------------------------------------

    def _key(self, kind: str, name: str) -> bytes:
        return f"{self._root}{kind}/{name}".encode()

    def _kind_of(self, key: bytes) -> str:
        return key.decode()[len(self._root) :].split("/", 1)[0]

    def _decode(self, kv: Any) -> Resource:
        try:
            return codec.decode(kv.value, kv.mod_revision)
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"etcd key {kv.key.decode()!r} holds an unreadable value: {exc}") from exc

    # -- calls -----------------------------------------------------------------------------

    def _deadline(self) -> float:
        return asyncio.get_running_loop().time() + self._timeout

    async def _call(
        self,
        what: str,
        send: Callable[[float], Awaitable[T]],
        *,
        deadline: float,
        write: bool = False,
    ) -> T:
        """``send(timeout)`` until it answers, retrying what cannot have changed anything."""
        loop = asyncio.get_running_loop()
        backoff = 0.05
        last: StoreError | None = None
        while True:
            if self._closed:
                raise Unavailable("the etcd store is closed", retry_after=0.0)
            remaining = deadline - loop.time()
            if remaining <= 0:
                cause = f" (last error: {last})" if last else ""
                raise Unavailable(
                    f"etcd at {self._where} did not answer {what} within {self._timeout:g} s{cause}"
                )
            # A read gets at least two tries in its budget; a write gets one.
            budget = remaining if write else min(remaining, max(1.0, self._timeout / 2))
            try:
                return await send(budget)
            except asyncio.CancelledError:
                if self.is_closed() and cancelled_by_grpc():
                    raise Unavailable("the etcd store was closed", retry_after=0.0) from None
                raise
            except Failure as exc:
                last = classify(exc, what, endpoints=self._where, write=write)
                if not retryable(last) or deadline - loop.time() <= backoff:
                    raise last from exc
            await asyncio.sleep(backoff * random.uniform(0.5, 1.5))  # noqa: S311 - jitter
            backoff = min(backoff * 2, 1.0)

    # -- reads -----------------------------------------------------------------------------

    async def revision(self) -> int:
        probe = self._root.encode()  # one key (never written): the header is what counts
        response = await self._call(
            "revision", lambda t: self._kv.get(probe, timeout=t), deadline=self._deadline()
        )
        return int(response.header.revision)

    async def get(self, kind: str, name: str) -> Resource:
        key = self._key(kind, name)
        response = await self._call("get", lambda t: self._kv.get(key, timeout=t), deadline=self._deadline())
        if not response.kvs:
            raise NotFound(kind, name)
        return self._decode(response.kvs[0])

    async def list(self, kind: str | None = None, *, selector: Selector | None = None) -> Listing:
        start = (self._root if kind is None else f"{self._root}{kind}/").encode()
        response = await self._call(
            "list",
            lambda t: self._kv.get(start, prefix_range_end(start), timeout=t),
            deadline=self._deadline(),
        )
        items = sorted((self._decode(kv) for kv in response.kvs), key=lambda r: r.key)
        if selector is not None:
            items = [r for r in items if selector.matches(r.labels)]
        return Listing(tuple(items), int(response.header.revision))

    async def _read(self, keys: Sequence[bytes], deadline: float) -> _Snapshot:
        """The current value of every key, from one snapshot (a read-only transaction)."""
        reads = _reads(keys)
        response = await self._call(
            "apply (reading the current state)",
            lambda t: self._kv.txn([], reads, timeout=t),
            deadline=deadline,
        )
        return self._snapshot(keys, response)

    def _snapshot(self, keys: Sequence[bytes], response: Any) -> _Snapshot:
        current: dict[bytes, tuple[Resource | None, int]] = {}
        for key, reply in zip(keys, response.responses, strict=True):
            kvs = reply.response_range.kvs
            current[key] = (self._decode(kvs[0]), int(kvs[0].mod_revision)) if kvs else (None, 0)
        return _Snapshot(int(response.header.revision), current)

    # -- writes ----------------------------------------------------------------------------

    async def apply(self, ops: Sequence[Op]) -> ApplyResult:
        ops = tuple(ops)
        stored_size = sum(len(codec.encode(op.resource)) for op in ops if isinstance(op, Put))
        planning.check_batch(ops, self.limits, stored_size)  # fail fast, before any read
        if not ops:
            return ApplyResult(await self.revision(), ())
        deadline = self._deadline()
        keys = [self._key(*planning.op_key(op)) for op in ops]
        snapshot = previous = await self._read(keys, deadline)
        reads = _reads(keys)  # the failure branch: a lost race returns the state that won
        for attempt in range(CONTENTION_ATTEMPTS):
            plan = self._plan(ops, keys, snapshot)
            if not plan.writes:
                return ApplyResult(snapshot.revision, plan.results(snapshot.revision))
            size = TxnRequest(compare=plan.compares, success=plan.writes, failure=reads).ByteSize()
            planning.check_batch(ops, self.limits, size)
            response = await self._call(
                "apply",
                partial(self._commit, plan, reads),
                deadline=deadline,
                write=True,
            )
            if response.succeeded:
                revision = int(response.header.revision)
                return ApplyResult(revision, plan.results(revision))
            previous, snapshot = snapshot, self._snapshot(keys, response)
            # Writers that lost together would collide again: spread them out a little.
            await asyncio.sleep(random.uniform(0, min(0.2, 0.005 * 2**attempt)))  # noqa: S311
        raise self._contended(ops, keys, previous, snapshot)

    def _commit(self, plan: _Plan, reads: Sequence[Any], timeout: float) -> Awaitable[Any]:
        return self._kv.txn(plan.compares, plan.writes, reads, timeout=timeout)

    def _plan(self, ops: Sequence[Op], keys: Sequence[bytes], snapshot: _Snapshot) -> _Plan:
        now = rfc3339(self._clock.now())
        plan = _Plan()
        for op, key in zip(ops, keys, strict=True):
            current, mod_revision = snapshot.current[key]
            plan.compares.append(_unchanged(key, mod_revision))
            if isinstance(op, Delete):
                plan.outcomes.append((Outcome.DELETED, planning.plan_delete(op, current)))
                plan.writes.append(KVService.txn_op_delete(key))
                continue
            outcome, target = planning.plan_put(op, current, now)
            plan.outcomes.append((outcome, target))
            if outcome is not Outcome.UNCHANGED:
                plan.writes.append(KVService.txn_op_put(key, codec.encode(target)))
        return plan

    def _contended(
        self, ops: Sequence[Op], keys: Sequence[bytes], before: _Snapshot, after: _Snapshot
    ) -> StoreError:
        for op, key in zip(ops, keys, strict=True):
            (_, expected), (_, actual) = before.current[key], after.current[key]
            if expected != actual:
                return Conflict(*planning.op_key(op), expected, actual or None)
        return Unavailable(
            f"the apply lost to concurrent writers {CONTENTION_ATTEMPTS} times; nothing was written; retry",
            retry_after=0.5,
        )

    # -- watch -----------------------------------------------------------------------------

    async def watch(
        self, *, from_revision: int, kinds: Collection[str] | None = None
    ) -> AsyncIterator[WatchEvent]:
        if self._closed:
            raise Unavailable("the etcd store is closed", retry_after=0.0)
        wanted = frozenset(kinds) if kinds is not None else None
        start = self._root
        if wanted is not None and len(wanted) == 1:
            start = f"{self._root}{next(iter(wanted))}/"
        changes = etcd_watch.changes(
            self._channel,
            key=start.encode(),
            range_end=prefix_range_end(start.encode()),
            after=from_revision,
            reconnect=self._reconnect,
            where=self._where,
            closed=self.is_closed,
        )
        async with contextlib.aclosing(changes):
            async for event in changes:
                if wanted is None or self._kind_of(event.kv.key) in wanted:
                    yield self._event(event)

    def _event(self, event: Any) -> WatchEvent:
        revision = int(event.kv.mod_revision)
        if event.type == _DELETE:
            if not event.HasField("prev_kv"):  # its previous state is compacted away
                raise Compacted(revision - 1, revision)
            return WatchEvent(EventType.DELETED, self._decode(event.prev_kv), revision)
        added = event.kv.create_revision == revision
        return WatchEvent(EventType.ADDED if added else EventType.MODIFIED, self._decode(event.kv), revision)

    def is_closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        if self._closed:  # closing twice is fine
            return
        self._closed = True
        await self._channel.close()


def _reads(keys: Sequence[bytes]) -> list[Any]:
    return [KVService.txn_op_get(key) for key in keys]


def _unchanged(key: bytes, mod_revision: int) -> Any:
    """The key is still as read: same ``mod_revision``, or still absent."""
    if mod_revision == 0:
        return KVService.txn_compare_create_revision(key, 0)
    return Compare(result=Compare.EQUAL, target=Compare.MOD, key=key, mod_revision=mod_revision)
