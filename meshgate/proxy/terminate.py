"""TLS termination on an accepted connection, with the peer's mesh identity verified.

``Listener(tls=...)`` terminates TLS for every connection it accepts. A role that must decide
something *before* the handshake (a local proxy's inbound refuses connections outright while it
has no healthy instance, so that callers fail over at once) accepts plain TCP and calls
``terminate_tls`` itself once it has decided. The listener's connection tracking follows the
transport through the handshake (``relay.hand_over``).
"""

from __future__ import annotations

import asyncio

from meshgate.pki.verify import VerificationError, VerifiedPeer
from meshgate.proxy.bridge import Refused
from meshgate.proxy.identity import TlsIdentity
from meshgate.proxy.relay import Pending, hand_over, run_lost_callbacks
from meshgate.proxy.stats import ListenerStats


async def terminate_tls(
    raw: asyncio.Transport, identity: TlsIdentity, stats: ListenerStats, timeout: float
) -> tuple[asyncio.Transport, VerifiedPeer]:
    """The TLS transport over ``raw`` (our current server certificate; a client certificate
    required) and the client's verified identity. Raises ``Refused`` (``tls_handshake`` or
    ``peer_identity``, counted in ``stats``) with ``raw`` aborted."""
    pending = Pending()
    hand_over(raw, pending)
    loop = asyncio.get_running_loop()
    try:
        tls = await loop.start_tls(
            raw, pending, identity.server_context, server_side=True, ssl_handshake_timeout=timeout
        )
    except asyncio.CancelledError:
        raw.abort()
        run_lost_callbacks(pending.lost_callbacks)
        raise
    except Exception as exc:  # ssl.SSLError, resets, the handshake timeout
        stats.tls_handshake_failures += 1
        raw.abort()
        run_lost_callbacks(pending.lost_callbacks)
        raise Refused("tls_handshake", f"TLS handshake failed: {exc!r}") from None
    if tls is None:  # pragma: no cover - only a loop without TLS support returns None
        raw.abort()
        run_lost_callbacks(pending.lost_callbacks)
        raise Refused("tls_handshake", "the event loop cannot start TLS")
    try:
        peer = identity.peer_identity(tls, usage="client")
    except VerificationError as exc:
        stats.peer_rejected += 1
        tls.abort()
        raise Refused("peer_identity", f"client identity refused: {exc}") from None
    return tls, peer
