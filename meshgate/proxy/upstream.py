"""Upstream connections: TCP or TLS with a connect timeout, and the server's SPIFFE identity.

``connect(endpoint, ssl=..., expect_identity=...)`` returns an ``Upstream`` whose transport is
held by a ``relay.Pending`` protocol (bytes a server sends first are kept for the relay). Errors
are ``UpstreamError`` subclasses that tell apart:

- ``ConnectError``: the connection could not be made: ``kind`` is ``refused``, ``timeout``
  (``ConnectTimeout``: TCP connect and TLS handshake together took longer than ``timeout``),
  ``reset``, ``unreachable`` (any other socket error) or ``tls`` (the handshake failed for
  another reason than the server's certificate);
- ``IdentityError``: the connection was made but the server is not who it must be: ``kind`` is
  ``untrusted`` (OpenSSL refused its chain against our roots during the handshake), ``invalid``
  (``verify_peer`` refused it: trust domain, URI SANs, profile, zone issuer rule) or ``mismatch``
  (a valid mesh identity, but not the expected SPIFFE ID; ``peer`` tells which).

With TLS 1.3 a server checks our client certificate after our side of the handshake is done: a
server refusing it shows up as the upstream closing right after ``connect`` returned, in the relay.

``connect_cluster(cluster, ...)`` picks endpoints from a ``Cluster``, reports each attempt to its
passive ejection, retries on another endpoint and keeps the endpoint's active count acquired until
the upstream connection is lost (through ``Pending.lost_callbacks``, which a ``Relay`` takes over).
"""

from __future__ import annotations

import asyncio
import functools
import ssl as ssl_module
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from cryptography import x509

from meshgate.pki.spiffe import SpiffeId
from meshgate.pki.verify import VerificationError, VerifiedPeer
from meshgate.proxy.cluster import Cluster, Endpoint
from meshgate.proxy.identity import TlsIdentity, peer_identity
from meshgate.proxy.relay import Pending, run_lost_callbacks
from meshgate.proxy.stats import ClusterStats

DEFAULT_CONNECT_TIMEOUT: Final = 5.0
DEFAULT_ATTEMPTS: Final = 3


def _utcnow() -> datetime:
    return datetime.now(UTC)


class UpstreamError(Exception):
    """An upstream connection failed; ``kind`` says how, ``endpoint`` where."""

    def __init__(self, message: str, *, endpoint: str, kind: str) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.kind = kind


class ConnectError(UpstreamError):
    """The connection could not be made (refused, timeout, reset, unreachable, TLS failure)."""


class ConnectTimeout(ConnectError):
    """The TCP connect and TLS handshake did not finish in time."""


class IdentityError(UpstreamError):
    """The server's certificate or SPIFFE ID is not the expected one."""

    def __init__(self, message: str, *, endpoint: str, kind: str, peer: VerifiedPeer | None = None) -> None:
        super().__init__(message, endpoint=endpoint, kind=kind)
        self.peer = peer


class NoEndpointError(UpstreamError):
    """The cluster had no endpoint to try."""


@dataclass(eq=False, slots=True)
class Upstream:
    """A connected upstream: hand ``transport`` to a ``Relay`` (it takes over ``protocol``)."""

    transport: asyncio.Transport
    protocol: Pending
    endpoint: Endpoint | None
    #: the server's verified identity when one was expected
    peer: VerifiedPeer | None = None

    def close(self) -> None:
        self.transport.close()


def _count(stats: ClusterStats | None, error: UpstreamError) -> None:
    if stats is None:
        return
    stats.connect_failures += 1
    if isinstance(error, ConnectTimeout):
        stats.connect_timeouts += 1
    elif isinstance(error, IdentityError):
        stats.identity_failures += 1
    elif error.kind == "tls":
        stats.tls_failures += 1


def _classify(exc: BaseException, where: str, timeout: float) -> UpstreamError | None:
    if isinstance(exc, TimeoutError):  # asyncio.timeout, or ETIMEDOUT from the kernel
        return ConnectTimeout(
            f"connecting to {where} timed out after {timeout:g} s", endpoint=where, kind="timeout"
        )
    if isinstance(exc, ssl_module.SSLCertVerificationError):
        return IdentityError(
            f"{where}: the server's certificate is not trusted: {exc.verify_message or exc}",
            endpoint=where,
            kind="untrusted",
        )
    if isinstance(exc, ssl_module.SSLError):
        return ConnectError(f"{where}: TLS handshake failed: {exc}", endpoint=where, kind="tls")
    if isinstance(exc, ConnectionRefusedError):
        return ConnectError(f"{where}: connection refused", endpoint=where, kind="refused")
    if isinstance(exc, ConnectionResetError | ConnectionAbortedError | BrokenPipeError):
        return ConnectError(f"{where}: connection reset during connect: {exc}", endpoint=where, kind="reset")
    if isinstance(exc, OSError):
        return ConnectError(f"{where}: cannot connect: {exc}", endpoint=where, kind="unreachable")
    return None


async def connect(
    endpoint: Endpoint | tuple[str, int],
    *,
    ssl: ssl_module.SSLContext | TlsIdentity | None = None,
    server_name: str | None = None,
    expect_identity: SpiffeId | str | None = None,
    roots: Sequence[x509.Certificate] | None = None,
    timeout: float = DEFAULT_CONNECT_TIMEOUT,
    now: Callable[[], datetime] | None = None,
    stats: ClusterStats | None = None,
) -> Upstream:
    """Connect to ``endpoint`` within ``timeout`` seconds (TCP connect and TLS handshake).

    ``ssl``: a client context, or a ``TlsIdentity`` (its current client context, roots and
    clock). ``server_name`` is the SNI (default: the endpoint's ``sni``). ``expect_identity`` (default:
    the endpoint's ``identity`` when ``ssl`` is given) is the SPIFFE ID the server must present;
    it is checked with ``verify_peer`` against ``roots`` (default: the TlsIdentity's) in its
    trust domain, usage ``server``. ``stats`` counts the attempt and its failure.
    """
    if isinstance(endpoint, Endpoint):
        host, port, known = endpoint.address, endpoint.port, endpoint
    else:
        (host, port), known = endpoint, None
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    context: ssl_module.SSLContext | None
    if isinstance(ssl, TlsIdentity):
        context = ssl.client_context
        roots = roots if roots is not None else ssl.roots
        now = now if now is not None else ssl.now
    else:
        context = ssl
    if context is not None and known is not None:
        server_name = server_name if server_name is not None else known.sni
        expect_identity = expect_identity if expect_identity is not None else known.identity
    expected: SpiffeId | None = None
    if expect_identity is not None:
        if context is None:
            raise ValueError("expect_identity needs a TLS connection (ssl=)")
        if not roots:
            raise ValueError("expect_identity needs the mesh roots (roots=, or ssl=TlsIdentity)")
        expected = (
            expect_identity if isinstance(expect_identity, SpiffeId) else SpiffeId.parse(expect_identity)
        )

    if stats is not None:
        stats.connect_attempts += 1
    loop = asyncio.get_running_loop()
    pending = Pending()
    try:
        async with asyncio.timeout(timeout):
            if context is None:
                transport, _ = await loop.create_connection(lambda: pending, host, port)
            else:
                transport, _ = await loop.create_connection(
                    lambda: pending,
                    host,
                    port,
                    ssl=context,
                    server_hostname=server_name if server_name is not None else host,
                    ssl_handshake_timeout=timeout,
                )
    except (OSError, TimeoutError) as exc:
        error = _classify(exc, where, timeout)
        if error is None:
            raise
        _count(stats, error)
        raise error from exc

    peer: VerifiedPeer | None = None
    if expected is not None:
        assert roots is not None
        try:
            peer = peer_identity(
                transport,
                roots,
                trust_domain=expected.trust_domain,
                now=(now or _utcnow)(),
                usage="server",
            )
        except VerificationError as exc:
            transport.abort()
            error = IdentityError(
                f"{where}: the server's identity is refused: {exc}", endpoint=where, kind="invalid"
            )
            _count(stats, error)
            raise error from exc
        if peer.spiffe_id != expected:
            transport.abort()
            error = IdentityError(
                f"{where}: the server is {peer.spiffe_id}, expected {expected}",
                endpoint=where,
                kind="mismatch",
                peer=peer,
            )
            _count(stats, error)
            raise error
    return Upstream(transport, pending, known, peer)


async def connect_cluster(
    cluster: Cluster,
    *,
    ssl: ssl_module.SSLContext | TlsIdentity | None = None,
    attempts: int = DEFAULT_ATTEMPTS,
    timeout: float = DEFAULT_CONNECT_TIMEOUT,
    roots: Sequence[x509.Certificate] | None = None,
    now: Callable[[], datetime] | None = None,
) -> Upstream:
    """Connect to an endpoint of ``cluster``, trying up to ``attempts`` different endpoints.

    Every attempt is reported to the cluster (passive ejection) and counted in its stats. The
    chosen endpoint's active count stays acquired until the connection is lost. Raises the last
    attempt's ``UpstreamError``, or ``NoEndpointError`` when there was nothing to try.
    """
    tried: list[Endpoint] = []
    last: UpstreamError | None = None
    for _ in range(max(attempts, 1)):
        endpoint = cluster.pick(exclude=tried)
        if endpoint is None:
            break
        tried.append(endpoint)
        cluster.acquire(endpoint)
        try:
            upstream = await connect(
                endpoint, ssl=ssl, timeout=timeout, roots=roots, now=now, stats=cluster.stats
            )
        except UpstreamError as exc:
            cluster.release(endpoint)
            cluster.report(endpoint, ok=False)
            last = exc
            continue
        except BaseException:
            cluster.release(endpoint)
            raise
        cluster.report(endpoint, ok=True)
        upstream.protocol.lost_callbacks.append(functools.partial(cluster.release, endpoint))
        if upstream.protocol.lost:
            run_lost_callbacks(upstream.protocol.lost_callbacks)
        return upstream
    if last is not None:
        raise last
    raise NoEndpointError(f"cluster {cluster.name!r} has no endpoint to try", endpoint="", kind="no_endpoint")


async def connect_groups(
    clusters: Sequence[Cluster], *, ssl: ssl_module.SSLContext | TlsIdentity | None, timeout: float, what: str
) -> Upstream:
    """A connection from the first cluster (locality group, zone) that accepts one, each tried on
    up to ``DEFAULT_ATTEMPTS`` of its endpoints. Raises the last ``UpstreamError``, or
    ``NoEndpointError`` naming ``what`` when no group had an endpoint."""
    last: UpstreamError | None = None
    for cluster in clusters:
        attempts = min(DEFAULT_ATTEMPTS, len(cluster.endpoints))
        try:
            return await connect_cluster(cluster, ssl=ssl, attempts=attempts, timeout=timeout)
        except UpstreamError as exc:
            last = exc
    if last is not None:
        raise last
    raise NoEndpointError(what, endpoint="", kind="no_endpoint")
