"""The zone CP's proxy-facing listener: TLS (its certificate from the zone's intermediate, for
``spiffe://<td>/zone/<zone>/cp``), one exchange per connection, chosen by its first message:

- ``ca``: the mesh root certificate (so a newcomer can check it against its token);
- ``enroll``: a join token and a CSR in, a certificate for the role's identity out;
- ``renew``, ``register``, ``sync``: only with a client certificate from this zone, which is
  the only thing that says who is asking.

Messages are length-prefixed JSON (``meshgate.sync.frames``): proxies need no web framework.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

from meshgate.clock import Clock
from meshgate.pki.keys import certificate_to_pem, fingerprint
from meshgate.pki.tls import peer_certificates
from meshgate.pki.verify import VerificationError, verify_peer
from meshgate.resources.kinds.dataplane import DataplaneSpec
from meshgate.resources.model import Resource
from meshgate.resources.validation import parse_resource
from meshgate.resources.violations import ValidationFailed
from meshgate.store.errors import StoreError
from meshgate.store.interface import Store
from meshgate.sync.frames import StreamChannel, loads_object
from meshgate.sync.messages import ProtocolError
from meshgate.sync.runner import Closed
from zone_cp.identity import ZoneIdentity
from zone_cp.metrics import ZoneMetrics
from zone_cp.proxies.certificates import Issuer, Refused, identity_of
from zone_cp.proxies.hub import ProxyHub, ProxyIdentity

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 10.0


class ProxyServer:
    def __init__(
        self, store: Store, identity: ZoneIdentity, hub: ProxyHub, clock: Clock, metrics: ZoneMetrics,
        on_change: Callable[[], None],
    ) -> None:  # fmt: skip
        self._store, self._zone_identity, self._hub = store, identity, hub
        self._clock, self._metrics, self._on_change = clock, metrics, on_change
        self._issuer = Issuer(store, identity.zone, identity.intermediate, clock)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        channel = StreamChannel(reader, writer)
        try:
            first = loads_object(await asyncio.wait_for(channel.receive(), HANDSHAKE_TIMEOUT))
            await self._dispatch(channel, first, writer)
        except Refused as refused:
            with contextlib.suppress(Closed):
                await channel.send(
                    json.dumps({"type": "error", "status": refused.status, "message": str(refused)})
                )
            log.warning("proxy refused: %s", refused, extra={"peer": str(writer.get_extra_info("peername"))})
        except (Closed, ProtocolError, TimeoutError) as exc:
            log.info("proxy connection ended: %s", exc)
        finally:
            await channel.close()

    async def _dispatch(
        self, channel: StreamChannel, first: dict[str, Any], writer: asyncio.StreamWriter
    ) -> None:
        kind = first.get("type")
        if kind == "ca":
            root = self._zone_identity.root
            await channel.send(json.dumps({
                "type": "ca", "certificate": certificate_to_pem(root).decode(), "fingerprint": fingerprint(root),
                "zone": self._zone_identity.zone,
            }))  # fmt: skip
            return
        if kind == "enroll":
            identity, reply = await self._issuer.enroll(first)
            self._metrics.certificates.labels("enroll", "issued").inc()
            log.info("proxy enrolled", extra={"identity": identity.spiffe_id})
            await channel.send(json.dumps(reply))
            return
        identity = self._caller(writer)
        if kind == "renew":
            reply = await self._issuer.renew(identity, first)
            self._metrics.certificates.labels("renew", "issued").inc()
            await channel.send(json.dumps(reply))
        elif kind == "register":
            await channel.send(json.dumps(await self._register(identity, first)))
        elif kind == "sync":
            await self._hub.serve(channel, identity, self._on_change)
        else:
            raise Refused(400, f"unknown request {kind!r}")

    def _caller(self, writer: asyncio.StreamWriter) -> ProxyIdentity:
        ssl_object = writer.get_extra_info("ssl_object")
        chain = peer_certificates(ssl_object) if ssl_object is not None else []
        if not chain:
            raise Refused(401, "this request needs the client certificate from enrollment")
        try:
            peer = verify_peer(
                chain, [self._zone_identity.root], trust_domain=self._zone_identity.trust_domain,
                now=self._clock.now(), usage="client",
            )  # fmt: skip
        except VerificationError as exc:
            raise Refused(403, f"certificate refused: {exc}") from None
        return identity_of(peer, self._zone_identity.zone)

    async def _register(self, identity: ProxyIdentity, body: dict[str, Any]) -> dict[str, Any]:
        zone = self._zone_identity.zone
        try:
            resource = parse_resource(body.get("resource"))
        except ValidationFailed as failed:
            raise Refused(400, "; ".join(str(v) for v in failed.violations)) from None
        _authorize(identity, resource, zone)
        try:
            result = await self._store.put(
                resource.with_store_fields(revision=None, generation=None, created=None)
            )
        except StoreError as exc:
            raise Refused(503, f"cannot persist: {exc}") from None
        self._metrics.registrations.labels(result.outcome.value).inc()
        self._on_change()
        return {"type": "registered", "outcome": result.outcome.value}


def _authorize(identity: ProxyIdentity, resource: Resource, zone: str) -> None:
    """A proxy or an edge writes only what describes itself, in its own zone."""
    if getattr(resource.spec, "zone", None) != zone:
        raise Refused(403, f"this is the zone CP of {zone!r}")
    if resource.kind == "Dataplane":
        dp = resource.spec_as(DataplaneSpec)
        if (
            identity.role == "local"
            and dp.role == "local"
            and all(w.service == identity.service for w in dp.workloads)
        ):
            return
        if identity.role == "ingress" and dp.role == "ingress" and resource.name == f"{zone}.{identity.name}":
            return
    if (
        resource.kind == "ZoneIngress"
        and identity.role == "ingress"
        and resource.name == f"{zone}.{identity.name}"
    ):
        return
    if resource.kind == "EdgeStatus" and identity.role == "edge" and resource.name == identity.name:
        return
    raise Refused(403, f"{identity.spiffe_id} may not write {resource.kind}/{resource.name}")
