"""Self-signed public certificates (as an ACME CA would issue, minus the CA) for edge tests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class PublicCert:
    names: tuple[str, ...]
    der: bytes
    chain_pem: bytes
    key_pem: bytes

    @property
    def entry(self) -> tuple[tuple[str, ...], bytes, bytes]:
        """What ``PublicTls.update`` takes for this certificate."""
        return self.names, self.chain_pem, self.key_pem


def self_signed(*names: str, use_rsa: bool = False) -> PublicCert:
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = (
        rsa.generate_private_key(65537, 2048) if use_rsa else ec.generate_private_key(ec.SECP256R1())
    )
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return PublicCert(
        tuple(names), cert.public_bytes(serialization.Encoding.DER), cert.public_bytes(serialization.Encoding.PEM),
        key_pem,
    )  # fmt: skip
