"""Who is on the other end of a zone connection: checked from its certificate, not its word.

A zone CP presents a leaf ``spiffe://<td>/zone/<z>/cp`` issued by zone z's intermediate. The
intermediate must be the one the global CP issued at z's last enrollment, and z must still
be defined and enabled.
"""

from __future__ import annotations

from aiohttp import web

from global_cp.zones.refusals import ZoneRefused
from global_cp.zones.trust import Trust
from meshgate.clock import Clock
from meshgate.pki.keys import fingerprint
from meshgate.pki.tls import peer_certificates
from meshgate.pki.verify import VerificationError, verify_peer
from meshgate.resources.kinds.system import ZoneEnrollmentSpec
from meshgate.resources.kinds.zone import ZoneSpec
from meshgate.store.errors import NotFound
from meshgate.store.interface import Store


async def authenticate_zone(request: web.Request, store: Store, trust: Trust, clock: Clock) -> str:
    ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
    chain = peer_certificates(ssl_object) if ssl_object is not None else []
    if not chain:
        raise ZoneRefused(401, "no-certificate", "a zone connects with the certificate from its enrollment")
    try:
        peer = verify_peer(
            chain, [trust.root], trust_domain=trust.trust_domain, now=clock.now(), usage="client"
        )
    except VerificationError as exc:
        raise ZoneRefused(403, "bad-certificate", f"certificate refused: {exc}") from None
    if peer.identity.role != "zone-cp" or peer.identity.zone is None:
        raise ZoneRefused(403, "not-a-zone", f"{peer.spiffe_id} is not a zone control plane")
    zone = peer.identity.zone
    intermediate = peer.path[1] if len(peer.path) > 2 else None
    try:
        enrolled = (await store.get("ZoneEnrollment", zone)).spec_as(ZoneEnrollmentSpec)
    except NotFound:
        raise ZoneRefused(403, "not-enrolled", f"zone {zone!r} has not enrolled", zone) from None
    if intermediate is None or fingerprint(intermediate) != enrolled.fingerprint:
        raise ZoneRefused(
            403,
            "superseded-intermediate",
            f"zone {zone!r} presents an intermediate CA it no longer holds (the zone enrolled again since)",
            zone,
        )
    await require_enabled_zone(store, zone)
    return zone


async def require_enabled_zone(store: Store, zone: str) -> None:
    """Zones that are not defined, or are disabled, are turned away."""
    try:
        spec = (await store.get("Zone", zone)).spec_as(ZoneSpec)
    except NotFound:
        raise ZoneRefused(
            403, "unknown-zone", f"zone {zone!r} is not defined at the global CP", zone
        ) from None
    if not spec.enabled:
        raise ZoneRefused(403, "disabled-zone", f"zone {zone!r} is disabled", zone)
