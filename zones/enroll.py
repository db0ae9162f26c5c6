"""A proxy's first contact with its zone CP, and its certificate renewals.

First contact: read the join token's claims (unverified: no key yet) for the mesh CA's
fingerprint, fetch the CA over TLS without verification and accept it only if the fingerprint
matches, then send the token and a CSR over TLS verified against that CA (and the zone CP's
identity ``spiffe://<td>/zone/<zone>/cp``). Renewal: a CSR over mTLS with the current
certificate, before it expires.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from meshgate.pki import join_tokens
from meshgate.pki.ca import ca_trust_domain
from meshgate.pki.keys import (
    certificate_from_pem,
    certificate_to_pem,
    csr_to_pem,
    fingerprint,
    make_csr,
    new_private_key,
    private_key_to_pem,
)
from meshgate.pki.tls import client_context, peer_certificates
from meshgate.pki.verify import VerificationError, verify_peer
from meshgate.sync.frames import StreamChannel
from meshgate.sync.runner import Closed
from zones.state import Identity

CONNECT_TIMEOUT = 10.0


class EnrollError(Exception):
    def __init__(self, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


@dataclass(frozen=True)
class ZoneCP:
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> ZoneCP:
        rest = url.removeprefix("tls://")
        host, _, port = rest.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--zone-cp must be tls://HOST:PORT, got {url!r}")
        return cls(host.strip("[]"), int(port))


async def open_channel(zone_cp: ZoneCP, context: ssl.SSLContext) -> StreamChannel:
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(zone_cp.host, zone_cp.port, ssl=context, server_hostname=zone_cp.host),
            CONNECT_TIMEOUT,
        )
    except (OSError, TimeoutError) as exc:
        raise EnrollError(
            f"cannot reach the zone CP at {zone_cp.host}:{zone_cp.port}: {exc}", retry=True
        ) from None
    return StreamChannel(reader, writer)


def check_zone_cp(channel: StreamChannel, roots: list[Any], trust_domain: str, zone: str | None) -> None:
    """The server must be a zone CP of our mesh (and of our zone, once we know it)."""
    ssl_object = channel.writer.get_extra_info("ssl_object")
    try:
        peer = verify_peer(peer_certificates(ssl_object), roots, trust_domain=trust_domain,
                           now=_now(), usage="server")  # fmt: skip
    except VerificationError as exc:
        raise EnrollError(f"the zone CP's certificate is refused: {exc}", retry=True) from None
    if peer.identity.role != "zone-cp" or (zone is not None and peer.identity.zone != zone):
        raise EnrollError(f"{peer.spiffe_id} is not the zone CP expected", retry=False)


async def _check_or_close(
    channel: StreamChannel, roots: list[Any], trust_domain: str, zone: str | None
) -> None:
    try:
        check_zone_cp(channel, roots, trust_domain, zone)
    except EnrollError:
        await channel.close()
        raise


def _now() -> datetime:
    return datetime.now(UTC)


async def request(channel: StreamChannel, body: dict[str, Any]) -> dict[str, Any]:
    try:
        reply = await asyncio.wait_for(channel.request(body), CONNECT_TIMEOUT)
    except (Closed, TimeoutError) as exc:
        raise EnrollError(f"the zone CP did not answer: {exc}", retry=True) from None
    finally:
        await channel.close()
    if reply.get("type") == "error":
        status = int(reply.get("status", 500))
        raise EnrollError(f"the zone CP refused ({status}): {reply.get('message')}", retry=status >= 500)
    return reply


async def enroll(
    zone_cp: ZoneCP, token: str, role: str, service: str, name: str, ttl: float | None
) -> Identity:
    try:
        claims = join_tokens.read_unverified(token)
    except join_tokens.TokenError as exc:
        raise EnrollError(f"the join token is unreadable: {exc}", retry=False) from None
    unverified = ssl.create_default_context()
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE
    ca = await request(await open_channel(zone_cp, unverified), {"type": "ca"})
    root = certificate_from_pem(str(ca.get("certificate", "")).encode())
    if fingerprint(root) != claims.ca_fingerprint:
        raise EnrollError(
            f"the zone CP's CA is {fingerprint(root)}, the join token names {claims.ca_fingerprint}: refusing it",
            retry=False,
        )
    trust_domain = ca_trust_domain(root)
    key = new_private_key()
    body: dict[str, Any] = {"type": "enroll", "token": token, "role": role, "csr": _csr(key, trust_domain),
            "service": service, "name": name}  # fmt: skip
    if ttl is not None:
        body["ttl"] = ttl
    channel = await open_channel(
        zone_cp, client_context(certificate_to_pem(root), server_hostname_check=False)
    )
    await _check_or_close(channel, [root], trust_domain, claims.zone)
    reply = await request(channel, body)
    return _identity(reply, key)


async def renew(zone_cp: ZoneCP, identity: Identity, ttl: float | None) -> Identity:
    key = new_private_key()
    body: dict[str, Any] = {"type": "renew", "csr": _csr(key, identity.trust_domain)}
    if ttl is not None:
        body["ttl"] = ttl
    channel = await open_channel(zone_cp, mtls_context(identity))
    await _check_or_close(channel, _roots(identity), identity.trust_domain, identity.zone)
    return _identity(await request(channel, body), key)


def mtls_context(identity: Identity) -> ssl.SSLContext:
    return client_context(
        "".join(identity.roots_pem).encode(), cert_chain_pem=identity.chain_pem.encode(),
        key_pem=identity.key_pem.encode(), server_hostname_check=False,
    )  # fmt: skip


def _roots(identity: Identity) -> list[Any]:
    return [certificate_from_pem(pem.encode()) for pem in identity.roots_pem]


def _csr(key: Any, trust_domain: str) -> str:
    return csr_to_pem(make_csr(key, f"spiffe://{trust_domain}/csr")).decode()


def _identity(reply: dict[str, Any], key: Any) -> Identity:
    try:
        return Identity(
            str(reply["identity"]), str(reply["chain"]), private_key_to_pem(key).decode(),
            tuple(str(r) for r in reply["roots"]), str(reply["trustDomain"]), str(reply["zone"]),
            str(reply["notAfter"]),
        )  # fmt: skip
    except (KeyError, TypeError) as exc:
        raise EnrollError(f"the zone CP's answer is incomplete: {exc}", retry=True) from None
