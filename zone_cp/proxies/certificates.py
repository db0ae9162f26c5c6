"""Proxy and edge certificates: issued at enrollment (join token) and renewed over mTLS (the
current certificate), always by this zone's intermediate, for the identity the role implies."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from meshgate.clock import Clock, rfc3339
from meshgate.pki import join_tokens
from meshgate.pki.ca import CertificateAuthority
from meshgate.pki.identities import edge_id, ingress_id, is_dns_label, service_id
from meshgate.pki.keys import certificate_to_pem, csr_from_pem
from meshgate.pki.leaf import issue_leaf
from meshgate.pki.verify import VerifiedPeer
from meshgate.resources.fields import parse_duration
from meshgate.resources.kinds.mesh import MeshSpec
from meshgate.resources.kinds.system import UsedTokenSpec, verification_keys
from meshgate.resources.model import Resource
from meshgate.store.errors import AlreadyExists, NotFound
from meshgate.store.interface import Store
from zone_cp.proxies.hub import ProxyIdentity

MIN_TTL = timedelta(seconds=2)


@dataclass
class Refused(Exception):
    status: int
    message: str

    def __str__(self) -> str:
        return self.message


def identity_for(
    role: str, service: str | None, name: str | None, trust_domain: str, zone: str
) -> ProxyIdentity:
    if role == "local":
        if not service or not is_dns_label(service):
            raise Refused(400, "a local proxy names the service it fronts (a DNS label)")
        return ProxyIdentity("local", str(service_id(trust_domain, service)), service=service)
    if role == "ingress":
        if not name or not is_dns_label(name):
            raise Refused(400, "an ingress has a name (a DNS label)")
        return ProxyIdentity("ingress", str(ingress_id(trust_domain, zone, name)), name=name)
    if role == "edge":
        if not name or not is_dns_label(name):
            raise Refused(400, "an edge has a name (a DNS label)")
        return ProxyIdentity("edge", str(edge_id(trust_domain, zone, name)), name=name)
    raise Refused(400, f"role must be local, ingress or edge, not {role!r}")


def _a(noun: str) -> str:
    return f"an {noun}" if noun[:1] in "aeiou" else f"a {noun}"


def identity_of(peer: VerifiedPeer, zone: str) -> ProxyIdentity:
    """The proxy a verified client certificate speaks for (issued by this zone's intermediate)."""
    if peer.issuer_zone != zone:
        raise Refused(403, f"{peer.spiffe_id} was not issued by zone {zone!r}")
    ident = peer.identity
    if ident.role == "service":
        return ProxyIdentity("local", str(peer.spiffe_id), service=ident.name)
    if ident.role == "ingress" and ident.zone == zone:
        return ProxyIdentity("ingress", str(peer.spiffe_id), name=ident.name)
    if ident.role == "edge" and ident.zone == zone:
        return ProxyIdentity("edge", str(peer.spiffe_id), name=ident.name)
    raise Refused(403, f"{peer.spiffe_id} is not a proxy of zone {zone!r}")


class Issuer:
    def __init__(self, store: Store, zone: str, ca: CertificateAuthority, clock: Clock) -> None:
        self._store, self._zone, self._ca, self._clock = store, zone, ca, clock

    async def _mesh_ttl(self) -> timedelta:
        try:
            spec = (await self._store.get("Mesh", "default")).spec_as(MeshSpec)
        except NotFound:
            return timedelta(hours=24)
        return timedelta(seconds=parse_duration(spec.mtls.certificate_ttl))

    async def enroll(self, body: dict[str, Any]) -> tuple[ProxyIdentity, dict[str, Any]]:
        token = body.get("token")
        if not isinstance(token, str):
            raise Refused(400, "enrollment needs a join token")
        keys = verification_keys((await self._store.list("SigningKey")).items)
        if not keys:
            raise Refused(503, "this zone has not received the token key from the global CP yet")
        try:
            claims = join_tokens.verify(token, keys, now=self._clock.now(), zone=self._zone)
        except join_tokens.TokenError as exc:
            raise Refused(401, f"join token refused: {exc}") from None
        role = str(body.get("role", ""))
        wanted = {"local": "proxy", "ingress": "ingress", "edge": "edge"}.get(role)
        if wanted != claims.role:
            named = {"local": "local proxy", "ingress": "ingress", "edge": "edge"}
            what = named.get(role, f"proxy of role {role!r}" if role else "proxy of no role")
            raise Refused(403, f"{_a(claims.role)} token cannot enroll {_a(what)}")
        identity = identity_for(
            role, body.get("service"), body.get("name"), self._ca.trust_domain, self._zone
        )
        if not claims.reusable:
            await self._burn(claims, identity)
        return identity, await self._issue(identity, body)

    async def renew(self, identity: ProxyIdentity, body: dict[str, Any]) -> dict[str, Any]:
        return await self._issue(identity, body)

    async def _burn(self, claims: join_tokens.JoinTokenClaims, identity: ProxyIdentity) -> None:
        name = hashlib.sha256(claims.token_id.encode()).hexdigest()[:32]
        spec = UsedTokenSpec(
            role=claims.role, zone=claims.zone, redeemed_at=rfc3339(self._clock.now()),
            expires_at=rfc3339(claims.expires_at), bound_to=identity.spiffe_id,
        )  # fmt: skip
        try:
            await self._store.create(Resource("UsedToken", name, spec))
        except AlreadyExists:
            raise Refused(401, "join token refused: it was already used") from None

    async def _issue(self, identity: ProxyIdentity, body: dict[str, Any]) -> dict[str, Any]:
        try:
            csr = csr_from_pem(str(body.get("csr", "")).encode())
        except ValueError as exc:
            raise Refused(400, f"CSR refused: {exc}") from None
        ttl = await self._mesh_ttl()
        asked = body.get("ttl")
        if isinstance(asked, int | float) and not isinstance(asked, bool):
            ttl = min(ttl, max(MIN_TTL, timedelta(seconds=float(asked))))
        try:
            leaf = issue_leaf(self._ca, csr, spiffe_id=identity.spiffe_id, now=self._clock.now(), ttl=ttl)
        except ValueError as exc:
            raise Refused(400, f"CSR refused: {exc}") from None
        return {
            "type": "certificate",
            "identity": identity.spiffe_id,
            "chain": self._ca.presented_chain_pem(leaf).decode(),
            "roots": [certificate_to_pem(self._ca.root).decode()],
            "trustDomain": self._ca.trust_domain,
            "zone": self._zone,
            "notAfter": rfc3339(leaf.not_valid_after_utc),
        }
