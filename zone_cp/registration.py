"""Proxies, ingresses and edges registering what they are with their zone CP.

They authenticate with a join token (signed by the global CP, verified here offline with the
key the zone received by sync, so this works while the global CP is away). A single-use token
may register one resource and keep updating it; a reusable one may register many.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from meshgate.clock import Clock, rfc3339
from meshgate.pki import join_tokens
from meshgate.resources.kinds.dataplane import DataplaneSpec
from meshgate.resources.kinds.system import UsedTokenSpec, verification_keys
from meshgate.resources.model import Resource
from meshgate.store.errors import AlreadyExists, NotFound
from meshgate.store.interface import Store

# Who may write what: kind -> roles of join tokens allowed to register it.
REGISTRABLE: dict[str, frozenset[str]] = {
    "Dataplane": frozenset({"proxy", "ingress"}),
    "ZoneIngress": frozenset({"ingress"}),
    "EdgeStatus": frozenset({"edge"}),
}


@dataclass
class RegistrationRefused(Exception):
    status: int
    message: str

    def __str__(self) -> str:
        return self.message


async def token_keys(store: Store) -> dict[str, Ed25519PublicKey]:
    return verification_keys((await store.list("SigningKey")).items)


async def authorize(store: Store, zone: str, clock: Clock, header: str, resource: Resource) -> None:
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise RegistrationRefused(401, "send a join token: Authorization: Bearer <token>")
    keys = await token_keys(store)
    if not keys:
        raise RegistrationRefused(503, "this zone has not received the token key from the global CP yet")
    try:
        claims = join_tokens.verify(token.strip(), keys, now=clock.now(), zone=zone)
    except join_tokens.TokenError as exc:
        raise RegistrationRefused(401, f"join token refused: {exc}") from None
    allowed = REGISTRABLE.get(resource.kind, frozenset())
    if claims.role not in allowed:
        raise RegistrationRefused(403, f"a {claims.role} token cannot register a {resource.kind}")
    if resource.kind == "Dataplane":
        role = resource.spec_as(DataplaneSpec).role
        if (role == "ingress") != (claims.role == "ingress"):
            raise RegistrationRefused(
                403, f"a {claims.role} token cannot register a dataplane of role {role}"
            )
    if not claims.reusable:
        await _bind_single_use(store, claims, resource, clock)


async def _bind_single_use(
    store: Store, claims: join_tokens.JoinTokenClaims, resource: Resource, clock: Clock
) -> None:
    name = hashlib.sha256(claims.token_id.encode()).hexdigest()[:32]
    bound = f"{resource.kind}/{resource.name}"
    spec = UsedTokenSpec(
        role=claims.role,
        zone=claims.zone,
        redeemed_at=rfc3339(clock.now()),
        expires_at=rfc3339(claims.expires_at),
        bound_to=bound,
    )
    try:
        await store.create(Resource("UsedToken", name, spec))
    except AlreadyExists:
        try:
            used = (await store.get("UsedToken", name)).spec_as(UsedTokenSpec)
        except NotFound:
            used = None
        if used is None or used.bound_to != bound:
            raise RegistrationRefused(
                401, "join token refused: it was already used for another resource"
            ) from None
