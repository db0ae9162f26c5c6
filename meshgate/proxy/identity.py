"""A proxy's own mTLS identity, rotated by swapping whole contexts, and peer identity checks.

``TlsIdentity`` holds the *current* server and client ``ssl.SSLContext`` built with
``meshgate.pki.tls`` from one certificate chain, key and set of mesh roots. ``update()`` builds
two new contexts and swaps them in; a context in use is never mutated, so connections made before
keep the context (and certificate) they were made with.

Listeners pick up a rotation without a restart in one of two ways:

- ``Listener`` (``listener.py``) starts TLS itself on each accepted connection with
  ``identity.server_context`` as it is at that moment;
- anything that needs one fixed context (``loop.create_server(ssl=...)``, ``listen(ssl=...)``)
  uses ``identity.front_server_context``: a context that never changes, whose ``sni_callback``
  sets ``ssl_object.context = identity.server_context`` during every handshake. OpenSSL calls it
  whether or not the client sends SNI; the handshake then continues with the current context's
  certificate, key and trust store (``SSL_set_SSL_CTX``). The front context itself is built
  like the others (same hardening, client certificates required, no session tickets), since
  options and the verify mode come from it.

``peer_identity(transport, ...)`` reads and verifies the certificate chain a peer presented on an
asyncio TLS transport (``meshgate.pki.tls.peer_certificates`` then
``meshgate.pki.verify.verify_peer``): chain to the mesh roots, the mesh trust domain, exactly one
SPIFFE URI SAN of a meshgate shape, the usage asked for.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from cryptography import x509

from meshgate.pki.ca import ca_trust_domain
from meshgate.pki.keys import certificates_from_pem
from meshgate.pki.spiffe import SpiffeId, validate_trust_domain
from meshgate.pki.tls import client_context, peer_certificates, server_context
from meshgate.pki.verify import Usage, VerificationError, VerifiedPeer, verify_peer

__all__ = [
    "TlsIdentity",
    "VerificationError",
    "VerifiedPeer",
    "peer_identity",
]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def peer_identity(
    transport: asyncio.BaseTransport,
    roots: Sequence[x509.Certificate],
    *,
    trust_domain: str,
    now: datetime,
    usage: Usage = "client",
) -> VerifiedPeer:
    """The verified identity of the peer of a TLS ``transport``.

    ``usage`` is what the peer's certificate must allow: ``"client"`` on a server-side
    transport (the default), ``"server"`` on a client-side one. Raises ``VerificationError``.
    """
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        raise VerificationError("the connection is not TLS: no peer certificate to verify")
    chain = peer_certificates(ssl_object)
    if not chain:
        raise VerificationError("the peer presented no certificate")
    return verify_peer(chain, roots, trust_domain=trust_domain, now=now, usage=usage)


def _leaf_spiffe_id(leaf: x509.Certificate) -> SpiffeId | None:
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        return None
    try:
        return SpiffeId.parse(uris[0])
    except ValueError:
        return None


class _Contexts:
    """One generation of contexts, built from one (chain, key, roots)."""

    __slots__ = ("certificate", "client", "roots", "server", "spiffe_id")

    def __init__(self, cert_chain_pem: bytes, key_pem: bytes, roots_pem: bytes, trust_domain: str) -> None:
        roots = certificates_from_pem(roots_pem)
        if not roots:
            raise ValueError("roots PEM holds no certificate")
        for root in roots:
            domain = ca_trust_domain(root)
            if domain != trust_domain:
                raise ValueError(
                    f"root CA of trust domain {domain!r} given for trust domain {trust_domain!r}"
                )
        chain = certificates_from_pem(cert_chain_pem)
        if not chain:
            raise ValueError("certificate chain PEM holds no certificate")
        self.roots: tuple[x509.Certificate, ...] = tuple(roots)
        self.certificate: x509.Certificate = chain[0]
        self.spiffe_id = _leaf_spiffe_id(chain[0])
        self.server: ssl.SSLContext = server_context(
            cert_chain_pem, key_pem, client_ca_pem=roots_pem, require_client_cert=True
        )
        self.client: ssl.SSLContext = client_context(
            roots_pem, cert_chain_pem=cert_chain_pem, key_pem=key_pem, server_hostname_check=False
        )


class TlsIdentity:
    """The current mTLS server and client contexts of one workload identity.

    ``trust_domain`` defaults to the roots' (all roots must name the same one).
    ``now`` gives the time used to verify peers (wall clock UTC by default).
    """

    def __init__(
        self,
        cert_chain_pem: bytes,
        key_pem: bytes,
        roots_pem: bytes,
        *,
        trust_domain: str | None = None,
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        if trust_domain is None:
            roots = certificates_from_pem(roots_pem)
            if not roots:
                raise ValueError("roots PEM holds no certificate")
            trust_domain = ca_trust_domain(roots[0])
        self.trust_domain = validate_trust_domain(trust_domain)
        self.now = now
        self.generation = 0
        self._current = _Contexts(cert_chain_pem, key_pem, roots_pem, self.trust_domain)
        front = server_context(cert_chain_pem, key_pem, client_ca_pem=roots_pem, require_client_cert=True)
        front.sni_callback = self._select_context
        self._front = front
        #: asked during each handshake on ``front_server_context`` (with the SNI): False fails
        #: the handshake at once, before any certificate is sent (e.g. nothing healthy behind)
        self.admit: Callable[[str | None], bool] | None = None
        #: handshakes on ``front_server_context`` that ``admit`` refused (counter)
        self.refused_handshakes = 0

    def update(self, cert_chain_pem: bytes, key_pem: bytes, roots_pem: bytes) -> None:
        """Swap in new contexts for a new certificate, key and roots (all or nothing: on error
        the current ones stay). Handshakes that start after this use them; established
        connections keep theirs."""
        self._current = _Contexts(cert_chain_pem, key_pem, roots_pem, self.trust_domain)
        self.generation += 1

    # -- current state ---------------------------------------------------------------------------

    @property
    def server_context(self) -> ssl.SSLContext:
        """The current server context (client certificates required); replaced on update."""
        return self._current.server

    @property
    def client_context(self) -> ssl.SSLContext:
        """The current client context (presents our certificate, no hostname check)."""
        return self._current.client

    @property
    def front_server_context(self) -> ssl.SSLContext:
        """A server context that never changes and switches each handshake to the current one."""
        return self._front

    @property
    def roots(self) -> tuple[x509.Certificate, ...]:
        return self._current.roots

    @property
    def certificate(self) -> x509.Certificate:
        """Our current leaf certificate."""
        return self._current.certificate

    @property
    def spiffe_id(self) -> SpiffeId | None:
        """Our current SPIFFE ID (the leaf's one URI SAN)."""
        return self._current.spiffe_id

    def _select_context(
        self, ssl_object: Any, server_name: str | None, context: ssl.SSLContext
    ) -> int | None:
        if self.admit is not None and not self.admit(server_name):
            self.refused_handshakes += 1
            return ssl.ALERT_DESCRIPTION_HANDSHAKE_FAILURE  # the client sees a failed handshake
        ssl_object.context = self._current.server
        return None

    # -- peers -------------------------------------------------------------------------------------

    def peer_identity(self, transport: asyncio.BaseTransport, *, usage: Usage = "client") -> VerifiedPeer:
        """The verified identity of the peer of ``transport`` (see ``peer_identity``), checked
        against the current roots and this identity's trust domain."""
        return peer_identity(
            transport, self.roots, trust_domain=self.trust_domain, now=self.now(), usage=usage
        )
