"""First contact with the global CP: trust its CA only if it matches the join token.

1. Read the token's claims (unverified: the zone holds no key yet) for the CA fingerprint.
2. Fetch the CA over TLS without verification, and accept it only if its fingerprint matches.
3. From then on verify the server against that CA: send the token and a CSR for the zone's
   intermediate; keep the key, the intermediate and the root in the data dir.
"""

from __future__ import annotations

import ssl
from datetime import datetime, timedelta
from typing import Any

import aiohttp

from meshgate.pki import join_tokens
from meshgate.pki.ca import zone_of_intermediate
from meshgate.pki.keys import (
    certificate_from_pem,
    certificate_to_pem,
    csr_to_pem,
    fingerprint,
    make_csr,
    new_private_key,
)
from meshgate.pki.tls import client_context
from zone_cp.identity import ZoneIdentity


class EnrollmentError(Exception):
    """Enrollment refused or impossible; ``retry`` says whether trying again can help."""

    def __init__(self, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


async def enroll(global_url: str, zone: str, token: str, *, now: datetime, ttl: timedelta) -> ZoneIdentity:
    try:
        claims = join_tokens.read_unverified(token)
    except join_tokens.TokenError as exc:
        raise EnrollmentError(f"the join token is unreadable: {exc}", retry=False) from None
    if claims.role != "zone":
        raise EnrollmentError(f"the join token is for role {claims.role!r}, not a zone", retry=False)
    if claims.zone != zone:
        raise EnrollmentError(f"the join token is for zone {claims.zone!r}, not {zone!r}", retry=False)
    root = await _pinned_root(global_url, claims.ca_fingerprint)
    key = new_private_key()
    csr = make_csr(key, f"spiffe://{_trust_domain(root)}")
    reply = await _post(
        global_url + "/enroll/v1/zone",
        {"token": token, "csr": csr_to_pem(csr).decode()},
        client_context(certificate_to_pem(root)),
    )
    intermediate = certificate_from_pem(reply["intermediate"].encode())
    if zone_of_intermediate(intermediate) != zone:
        raise EnrollmentError("the global CP returned an intermediate for another zone", retry=False)
    return ZoneIdentity.create(zone, root, intermediate, key, now=now, ttl=ttl)


async def _pinned_root(global_url: str, expected: str) -> Any:
    unverified = ssl.create_default_context()
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE
    body = await _get(global_url + "/enroll/v1/ca", unverified)
    try:
        root = certificate_from_pem(str(body["certificate"]).encode())
    except (KeyError, ValueError) as exc:
        raise EnrollmentError(f"the global CP sent no usable CA certificate: {exc}", retry=True) from None
    if fingerprint(root) != expected:
        raise EnrollmentError(
            f"the global CP's CA is {fingerprint(root)}, but the join token names {expected}: "
            "refusing to trust it (wrong server, or a token for another installation)",
            retry=False,
        )
    return root


def _trust_domain(root: Any) -> str:
    from meshgate.pki.ca import ca_trust_domain

    return ca_trust_domain(root)


async def _get(url: str, context: ssl.SSLContext) -> dict[str, Any]:
    return await _call("GET", url, None, context)


async def _post(url: str, body: dict[str, str], context: ssl.SSLContext) -> dict[str, Any]:
    return await _call("POST", url, body, context)


async def _call(
    method: str, url: str, body: dict[str, str] | None, context: ssl.SSLContext
) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=30)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.request(method, url, json=body, ssl=context) as response,
        ):
            data = await response.json(content_type=None)
            if response.status >= 400:
                message = (data or {}).get("error", {}).get("message", f"HTTP {response.status}")
                retry = response.status >= 500
                raise EnrollmentError(f"enrollment refused ({response.status}): {message}", retry=retry)
            if not isinstance(data, dict):
                raise EnrollmentError("the global CP sent something that is not JSON", retry=True)
            return data
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise EnrollmentError(f"cannot reach the global CP at {url}: {exc}", retry=True) from None
