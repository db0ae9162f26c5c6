"""Hardened ``ssl.SSLContext`` builders every meshgate component uses.

- TLS 1.2 and 1.3 only; TLS 1.2 suites are ECDHE with AES-GCM or ChaCha20-Poly1305 (no CBC, no
  RSA key exchange); TLS 1.3 keeps OpenSSL's suites (all AEAD).
- Key exchange groups X25519, P-256, P-384 only (set through ``openssl_ffi``; building a context
  fails rather than silently offering more).
- Compression and renegotiation off. Session tickets stay on, except on servers that verify
  client certificates: a session resumed from a ticket no longer holds the client's
  intermediates, so those resume from the server's session cache instead (which keeps them).
- A client resumes only when given ``session=``; a resumed client connection likewise lacks the
  server's intermediates, so mesh clients should not reuse sessions.
- PEM comes from memory. ``ssl`` loads a certificate chain and key only from a file, so they are
  written to an anonymous memory file (``memfd``) or, where that does not exist, to a 0600 file
  in a private 0700 temporary directory that is removed right after loading.

Peer identity is not checked here: a server or client reads the peer's chain with
``peer_certificates`` and checks it with ``meshgate.pki.verify.verify_peer``.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cryptography import x509

from meshgate.pki.openssl_ffi import TlsConfigError, peer_chain_der, set_groups

GROUPS = "X25519:P-256:P-384"
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"

__all__ = [
    "GROUPS",
    "TLS12_CIPHERS",
    "TlsConfigError",
    "client_context",
    "load_identity",
    "peer_certificates",
    "server_context",
]


def _no_password() -> str:
    raise TlsConfigError("encrypted private keys are not supported; pass an unencrypted PEM key")


@contextlib.contextmanager
def _pem_file(data: bytes) -> Iterator[str]:
    """A path holding ``data`` that exists only inside the ``with`` block."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("meshgate-tls", os.MFD_CLOEXEC)
        try:
            os.write(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="meshgate-tls-") as tmp:  # created 0700
        path = Path(tmp) / "chain.pem"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        try:
            yield str(path)
        finally:
            path.unlink(missing_ok=True)


def _harden(context: ssl.SSLContext) -> None:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= (
        ssl.OP_NO_COMPRESSION
        | ssl.OP_NO_RENEGOTIATION
        | ssl.OP_CIPHER_SERVER_PREFERENCE
        | ssl.OP_SINGLE_ECDH_USE
    )
    context.set_ciphers(TLS12_CIPHERS)
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    set_groups(context, GROUPS)


def load_identity(context: ssl.SSLContext, cert_chain_pem: bytes, key_pem: bytes) -> None:
    """Load (or replace, for rotation: new handshakes use it) the certificate and key."""
    blob = cert_chain_pem.rstrip(b"\n") + b"\n" + key_pem
    with _pem_file(blob) as path:
        context.load_cert_chain(path, path, password=_no_password)


def _load_roots(context: ssl.SSLContext, ca_pem: bytes) -> None:
    if b"-----BEGIN CERTIFICATE-----" not in ca_pem:
        raise ValueError("CA PEM holds no certificate")
    context.load_verify_locations(cadata=ca_pem.decode("ascii"))


def server_context(
    cert_chain_pem: bytes,
    key_pem: bytes,
    *,
    client_ca_pem: bytes | None = None,
    require_client_cert: bool = False,
) -> ssl.SSLContext:
    """A server context presenting ``cert_chain_pem`` (leaf first, then intermediates).

    With ``client_ca_pem`` client certificates are verified against it (required when
    ``require_client_cert``, else optional).
    """
    if require_client_cert and client_ca_pem is None:
        raise ValueError("require_client_cert needs client_ca_pem")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _harden(context)
    load_identity(context, cert_chain_pem, key_pem)
    if client_ca_pem is not None:
        _load_roots(context, client_ca_pem)
        context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
        # A session resumed from a stateless ticket has lost the client's intermediates, so
        # verify_peer could not place the client in its zone. Keep resumption stateful: the
        # server's session cache holds the whole chain.
        context.options |= ssl.OP_NO_TICKET
    else:
        context.verify_mode = ssl.CERT_NONE
    return context


def client_context(
    ca_pem: bytes,
    *,
    cert_chain_pem: bytes | None = None,
    key_pem: bytes | None = None,
    server_hostname_check: bool = True,
) -> ssl.SSLContext:
    """A client context trusting ``ca_pem``; with ``cert_chain_pem`` and ``key_pem`` it presents a
    client certificate. Turn ``server_hostname_check`` off for mesh peers, whose identity is the
    SPIFFE ID checked with ``verify_peer`` rather than a DNS name."""
    if (cert_chain_pem is None) != (key_pem is None):
        raise ValueError("cert_chain_pem and key_pem go together")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _harden(context)
    context.check_hostname = server_hostname_check
    context.verify_mode = ssl.CERT_REQUIRED
    _load_roots(context, ca_pem)
    if cert_chain_pem is not None and key_pem is not None:
        load_identity(context, cert_chain_pem, key_pem)
    return context


def peer_certificates(conn: ssl.SSLSocket | ssl.SSLObject) -> list[x509.Certificate]:
    """The certificates the peer sent, leaf first, ready for ``verify_peer``; empty if none.

    Works on blocking sockets and on asyncio's ``get_extra_info("ssl_object")``.
    """
    return [x509.load_der_x509_certificate(der) for der in peer_chain_der(conn)]
