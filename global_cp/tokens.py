"""Join tokens issued by the global CP: signed with its token key, carrying the CA fingerprint
a newcomer must see at the server. Zone CPs verify them offline with the public key."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict

from meshgate.clock import Clock
from meshgate.pki import join_tokens
from meshgate.resources.fields import DnsLabel, Duration, parse_duration
from meshgate.resources.kinds.system import MeshCASpec
from meshgate.store.interface import Store

MAX_TTL = timedelta(days=366)


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    role: Literal["zone", "edge", "ingress", "proxy"]
    zone: DnsLabel
    ttl: Duration = "24h"
    reusable: bool = False
    mesh: DnsLabel = "default"


class TtlTooLong(ValueError):
    pass


class TokenIssuer:
    def __init__(self, store: Store, key: Ed25519PrivateKey, key_id: str, clock: Clock) -> None:
        self._store, self._key, self._key_id, self._clock = store, key, key_id, clock

    async def issue(self, request: TokenRequest) -> tuple[str, join_tokens.JoinTokenClaims]:
        ttl = timedelta(seconds=parse_duration(request.ttl))
        if ttl > MAX_TTL:
            raise TtlTooLong(f"at most {MAX_TTL.days} days")
        ca = (await self._store.get("MeshCA", request.mesh)).spec_as(MeshCASpec)
        claims = join_tokens.JoinTokenClaims.new(
            role=request.role,
            zone=request.zone,
            mesh=request.mesh,
            now=self._clock.now(),
            ttl=ttl,
            reusable=request.reusable,
            ca_fingerprint=ca.fingerprint,
            key_id=self._key_id,
        )
        return join_tokens.sign(claims, self._key), claims
