"""Zone enrollment: a join token and a CSR in, the zone's intermediate CA out.

``GET /enroll/v1/ca`` gives the root certificate so a newcomer can compare it with the
fingerprint in its token before trusting anything; ``POST /enroll/v1/zone`` redeems the token.
A single-use token is burned (compare-and-swap) before the intermediate is issued.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

from aiohttp import web

from global_cp.zones.identity import require_enabled_zone
from global_cp.zones.refusals import ZoneRefused
from global_cp.zones.trust import Trust, token_keys
from meshgate.clock import Clock, rfc3339
from meshgate.pki import join_tokens
from meshgate.pki.ca import issue_intermediate
from meshgate.pki.keys import certificate_to_pem, csr_from_pem, fingerprint
from meshgate.resources.fields import parse_duration
from meshgate.resources.kinds.system import UsedTokenSpec, ZoneEnrollmentSpec
from meshgate.resources.model import Resource
from meshgate.store.errors import AlreadyExists
from meshgate.store.interface import Store


def root_document(trust: Trust) -> dict[str, str]:
    return {
        "mesh": trust.mesh,
        "trustDomain": trust.trust_domain,
        "certificate": certificate_to_pem(trust.root).decode(),
        "fingerprint": fingerprint(trust.root),
    }


async def enroll_zone(store: Store, trust: Trust, clock: Clock, body: object) -> dict[str, str]:
    if (
        not isinstance(body, dict)
        or not isinstance(body.get("token"), str)
        or not isinstance(body.get("csr"), str)
    ):
        raise ZoneRefused(400, "BadRequest", "send {token, csr}: a zone join token and a PEM CSR")
    now = clock.now()
    try:
        claims = join_tokens.verify(body["token"], await token_keys(store), now=now, role="zone")
    except join_tokens.TokenError as exc:
        raise ZoneRefused(401, f"token-{exc.reason}", f"join token refused: {exc}") from None
    zone = claims.zone
    await require_enabled_zone(store, zone)
    try:
        csr = csr_from_pem(body["csr"].encode())
    except ValueError as exc:
        raise ZoneRefused(400, "bad-csr", f"CSR refused: {exc}", zone) from None
    if not claims.reusable:
        used = UsedTokenSpec(
            role=claims.role, zone=zone, redeemed_at=rfc3339(now), expires_at=rfc3339(claims.expires_at)
        )
        name = hashlib.sha256(claims.token_id.encode()).hexdigest()[:32]
        try:
            await store.create(Resource("UsedToken", name, used))
        except AlreadyExists:
            raise ZoneRefused(401, "token-used", "join token refused: it was already used", zone) from None
    ttl = timedelta(seconds=parse_duration(trust.mesh_spec.mtls.zone_ca_ttl))
    try:
        intermediate = issue_intermediate(
            trust.ca, csr, zone=zone, trust_domain=trust.trust_domain, now=now, ttl=ttl
        )
    except ValueError as exc:
        raise ZoneRefused(400, "bad-csr", f"CSR refused: {exc}", zone) from None
    pem = certificate_to_pem(intermediate).decode()
    record = ZoneEnrollmentSpec(
        zone=zone, fingerprint=fingerprint(intermediate), certificate=pem, enrolled_at=rfc3339(now)
    )
    await store.put(Resource("ZoneEnrollment", zone, record))  # a re-enrollment replaces the last
    return {"zone": zone, "intermediate": pem, **root_document(trust)}


async def handle_ca(request: web.Request, trust: Trust) -> web.Response:
    return web.json_response(root_document(trust))
