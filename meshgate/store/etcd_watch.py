"""The etcd watch stream, reopened after failures without losing or repeating an event.

Why this does not use ``etcd3aio.WatchService.watch``: on a transient error it reopens the
stream from ``response.header.revision + 1`` of the last response it received. For the
"created" response, and for the chunks of a catch-up from an old revision, the header
revision is the store's current revision, later than the last event actually delivered;
events between the two are silently skipped after a reconnect. So this module speaks the
Watch RPC itself, with etcd3aio's generated stub and messages on the store's channel, and
resumes from the mod_revision of the last event it has received plus one.

etcd never splits one revision's events across two watch responses (no ``fragment``), so
tracking the last revision per response is exact.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
from etcd3aio._protobuf import WatchCreateRequest, WatchRequest, WatchStub

from meshgate.aio import within
from meshgate.store.errors import Compacted, StoreError, Unavailable
from meshgate.store.etcd_errors import cancelled_by_grpc

# Ask etcd to end the stream when the member loses its leader (``WithRequireLeader`` in
# clientv3): a member cut off from the cluster otherwise keeps a silent stream open.
_REQUIRE_LEADER = (("hasleader", "true"),)

_FATAL_CODES = frozenset(
    {
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.OUT_OF_RANGE,
    }
)


@dataclass(frozen=True, slots=True)
class Reconnect:
    """How a broken watch stream is reopened."""

    outage_deadline: float = 60.0  # raise Unavailable when etcd stays away this long
    open_timeout: float = 5.0  # a stream etcd has not confirmed by then is reopened
    quiet_probe: float = 10.0  # after this long without a response, ask etcd for progress
    probe_timeout: float = 5.0  # a stream that does not answer the probe is reopened
    initial_backoff: float = 0.1
    max_backoff: float = 3.0


class _StreamBroken(Exception):
    """The stream failed in a way that reopening may cure."""


async def changes(
    channel: grpc.aio.Channel,
    *,
    key: bytes,
    range_end: bytes,
    after: int,
    reconnect: Reconnect,
    where: str,
    closed: Callable[[], bool],
) -> AsyncGenerator[Any, None]:
    """Every ``mvccpb.Event`` in ``[key, range_end)`` after revision ``after``, in order.

    Events carry ``prev_kv``. Raises Compacted, or Unavailable after a long outage.
    """
    loop = asyncio.get_running_loop()
    stub = WatchStub(channel)
    last = after
    down_since: float | None = None
    backoff = reconnect.initial_backoff
    while True:
        call = stub.Watch(metadata=_REQUIRE_LEADER)
        watchdog = _Watchdog(call, reconnect)
        try:
            await call.write(
                WatchRequest(
                    create_request=WatchCreateRequest(
                        key=key, range_end=range_end, start_revision=last + 1, prev_kv=True
                    )
                )
            )
            while True:
                response = await call.read()
                if response is grpc.aio.EOF:
                    raise _StreamBroken("etcd ended the watch stream")
                watchdog.heard()
                down_since, backoff = None, reconnect.initial_backoff
                if response.compact_revision > 0:
                    raise Compacted(last, response.compact_revision)
                if response.canceled:
                    raise _cancelled(response.cancel_reason, where)
                newest = last
                for event in response.events:
                    revision = event.kv.mod_revision
                    if revision <= last:  # already delivered before a reconnect
                        continue
                    newest = max(newest, revision)
                    yield event
                last = newest
        except grpc.aio.AioRpcError as exc:
            if exc.code() in _FATAL_CODES:
                raise StoreError(f"etcd at {where} refused the watch: {exc.details()}") from exc
            cause = f"{exc.code().name}: {exc.details()}"
        except _StreamBroken as exc:
            cause = str(exc)
        except asyncio.CancelledError:
            if not cancelled_by_grpc():
                raise
            cause = watchdog.verdict or "gRPC cancelled the watch call"
        finally:
            watchdog.stop()
            call.cancel()
        if closed():
            raise Unavailable("the etcd store was closed while watching", retry_after=0.0)
        now = loop.time()
        down_since = now if down_since is None else down_since
        if now - down_since > reconnect.outage_deadline:
            raise Unavailable(
                f"etcd at {where} unreachable for the watch for over "
                f"{reconnect.outage_deadline:.0f} s (last error: {cause}); "
                f"resume from revision {last} when it is back",
                retry_after=5.0,
            )
        await asyncio.sleep(backoff * random.uniform(0.5, 1.5))  # noqa: S311 - jitter
        backoff = min(backoff * 2, reconnect.max_backoff)


def _cancelled(reason: str, where: str) -> Exception:
    if "no leader" in reason or not reason:
        return _StreamBroken(f"etcd cancelled the watch: {reason or 'no reason given'}")
    return StoreError(f"etcd at {where} cancelled the watch: {reason}")


class _Watchdog:
    """Cancels a stream that has gone silent, which gRPC keepalive notices only slowly.

    A member that accepts connections but never answers (frozen, or cut off behind a
    proxy) would hold the stream for a minute or more. Until etcd confirms the watch it
    gets ``open_timeout``; after that, every ``quiet_probe`` of silence a progress request
    goes out, which etcd answers at once; no answer within ``probe_timeout`` means the
    stream is dead. Cancelling the call makes the pending read raise CancelledError.
    """

    def __init__(self, call: Any, reconnect: Reconnect) -> None:
        self._call = call
        self._reconnect = reconnect
        self._loop = asyncio.get_running_loop()
        self._last_heard: float | None = None
        self.verdict: str | None = None
        self._task = asyncio.create_task(self._run(), name="etcd-watch-watchdog")

    def heard(self) -> None:
        self._last_heard = self._loop.time()

    def stop(self) -> None:
        self._task.cancel()

    async def _run(self) -> None:
        await asyncio.sleep(self._reconnect.open_timeout)
        if self._last_heard is None:
            return self._give_up("etcd did not confirm the watch")
        while True:
            quiet = self._loop.time() - self._last_heard
            if quiet < self._reconnect.quiet_probe:
                await asyncio.sleep(self._reconnect.quiet_probe - quiet)
                continue
            asked = self._loop.time()
            try:
                await within(
                    self._call.write(WatchRequest(progress_request={})), self._reconnect.probe_timeout
                )
            except Exception:  # the call is broken or stuck: either way, reopen
                return self._give_up("etcd did not take a progress request")
            await asyncio.sleep(max(0.0, asked + self._reconnect.probe_timeout - self._loop.time()))
            if self._last_heard < asked:
                return self._give_up(
                    f"no answer to a progress request in {self._reconnect.probe_timeout:g} s"
                )

    def _give_up(self, verdict: str) -> None:
        self.verdict = verdict
        self._call.cancel()
