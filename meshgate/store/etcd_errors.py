"""What an etcd or gRPC failure means to a store caller.

etcd3aio raises ``EtcdConnectionError`` / ``EtcdTransientError`` (with the gRPC error as
``__cause__``) for UNAVAILABLE / DEADLINE_EXCEEDED, the raw ``grpc.aio.AioRpcError`` for
every other status, and ``TimeoutError`` when its per-call timeout fires. A write is only
reported as plainly ``Unavailable`` (nothing written, safe to retry) when the failure shows
it never reached the raft log; otherwise its outcome is unknown: ``Indeterminate``.
"""

from __future__ import annotations

import asyncio

import grpc
import grpc.aio
from etcd3aio.errors import EtcdError, EtcdPermissionDeniedError, EtcdUnauthenticatedError

from meshgate.store.errors import Indeterminate, StoreError, TooLarge, Unavailable

SPLIT_HINT = "split the file into smaller applies"

# etcd's own refusals of a request that is too big for one transaction.
_TOO_LARGE = (
    "too many operations in txn request",
    "request is too large",
    "larger than max",  # gRPC's message size limit
)

# Failures that prove the request was not applied: it never left this client, never
# reached the raft log, or was refused up front.
_NOT_APPLIED = (
    "failed to connect",
    "connections to all backends failing",
    "connection refused",
    "proposal dropped",
    "no leader",
    "too many requests",
    "not capable",
    "database space exceeded",
    "not supported for learner",
)

_TRANSIENT_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)

Failure = (EtcdError, grpc.aio.AioRpcError, TimeoutError)


def rpc_error(exc: BaseException) -> grpc.aio.AioRpcError | None:
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc
    if isinstance(exc.__cause__, grpc.aio.AioRpcError):
        return exc.__cause__
    return None


def describe(exc: BaseException) -> str:
    rpc = rpc_error(exc)
    if rpc is not None:
        return f"{rpc.code().name}: {rpc.details() or 'no detail'}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


def classify(exc: BaseException, what: str, *, endpoints: str, write: bool) -> StoreError:
    """The StoreError for a failed call: TooLarge, Unavailable, Indeterminate or StoreError."""
    detail = describe(exc)
    lowered = detail.lower()
    if any(marker in lowered for marker in _TOO_LARGE):
        return TooLarge(f"etcd refused the apply as too large ({detail}); {SPLIT_HINT}")
    if isinstance(exc, (EtcdUnauthenticatedError, EtcdPermissionDeniedError)):
        return StoreError(f"etcd at {endpoints} refused {what}: {detail}; check the credentials")
    rpc = rpc_error(exc)
    transient = rpc is None or rpc.code() in _TRANSIENT_CODES
    if not transient:
        return StoreError(f"etcd at {endpoints}: {what} failed: {detail}")
    if "database space exceeded" in lowered:
        return Unavailable(
            f"etcd at {endpoints} is out of space (NOSPACE alarm): compact, defragment and "
            "disarm the alarm; nothing was written",
            retry_after=30.0,
        )
    if write and not any(marker in lowered for marker in _NOT_APPLIED):
        return Indeterminate(
            f"etcd at {endpoints} failed after the {what} was sent ({detail}); it may or may "
            "not have been applied: read the resources again before retrying",
            retry_after=1.0,
        )
    return Unavailable(f"etcd at {endpoints} unavailable for {what}: {detail}", retry_after=1.0)


def retryable(error: StoreError) -> bool:
    """Safe to try again at once: nothing was applied and the cause may pass."""
    return type(error) is Unavailable and error.retry_after <= 1.0


def cancelled_by_grpc() -> bool:
    """For a CancelledError: True when gRPC cancelled the call (its channel was closed),
    False when the task itself is being cancelled (then it must propagate)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() == 0
