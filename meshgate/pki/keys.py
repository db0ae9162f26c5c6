"""Keys, PEM encoding, fingerprints and CSRs (ECDSA P-256 everywhere)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from meshgate.pki.spiffe import SpiffeId


def new_private_key() -> ec.EllipticCurvePrivateKey:
    """A fresh ECDSA P-256 private key (the only key type of meshgate certificates)."""
    return ec.generate_private_key(ec.SECP256R1())


def require_p256(key: object, what: str) -> ec.EllipticCurvePublicKey:
    """Return ``key`` as a P-256 public key, or raise ValueError naming ``what``."""
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError(f"{what} must be an ECDSA P-256 key, got {type(key).__name__}")
    return key


def private_key_to_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted (encrypt it with the KEK before it is stored)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def private_key_from_pem(data: bytes) -> ec.EllipticCurvePrivateKey:
    """Load an unencrypted P-256 private key from PEM; ValueError for anything else."""
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"expected an ECDSA private key, got {type(key).__name__}")
    require_p256(key.public_key(), "private key")
    return key


def certificate_to_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def certificates_to_pem(certs: Iterable[x509.Certificate]) -> bytes:
    """Concatenated PEM, in the order given (leaf first for a chain)."""
    return b"".join(certificate_to_pem(c) for c in certs)


def certificates_from_pem(data: bytes) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle, in order; ValueError when there is none."""
    return x509.load_pem_x509_certificates(data)


def certificate_from_pem(data: bytes) -> x509.Certificate:
    """Exactly one certificate; ValueError when the PEM holds none or several."""
    certs = certificates_from_pem(data)
    if len(certs) != 1:
        raise ValueError(f"expected exactly one certificate in PEM, found {len(certs)}")
    return certs[0]


def csr_to_pem(csr: x509.CertificateSigningRequest) -> bytes:
    return csr.public_bytes(serialization.Encoding.PEM)


def csr_from_pem(data: bytes) -> x509.CertificateSigningRequest:
    return x509.load_pem_x509_csr(data)


def fingerprint(cert: x509.Certificate) -> str:
    """``sha256:<64 lowercase hex>`` of the certificate's DER encoding."""
    der = cert.public_bytes(serialization.Encoding.DER)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def make_csr(key: ec.EllipticCurvePrivateKey, spiffe_id: str | SpiffeId) -> x509.CertificateSigningRequest:
    """A CSR signed by ``key`` asking for ``spiffe_id`` as its one URI SAN.

    The issuer decides the identity it certifies (from the join token); only the CSR's key and
    signature are used when issuing, so this SAN is informational.
    """
    sid = spiffe_id if isinstance(spiffe_id, SpiffeId) else SpiffeId.parse(spiffe_id)
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(sid))]),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
