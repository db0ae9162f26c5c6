"""Certificates for the PKI tests: the real hierarchy, and hand-made ones that break one rule."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshgate.pki.ca import CertificateAuthority, issue_intermediate
from meshgate.pki.keys import make_csr, new_private_key
from meshgate.pki.leaf import issue_leaf

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TD = "mesh.example"


def zone_authority(
    root: CertificateAuthority, zone: str, *, now: datetime = NOW, ttl: timedelta | None = None
) -> CertificateAuthority:
    key = new_private_key()
    csr = make_csr(key, f"spiffe://{root.trust_domain}/zone/{zone}/cp")
    extra = {} if ttl is None else {"ttl": ttl}
    cert = issue_intermediate(root, csr, zone=zone, trust_domain=root.trust_domain, now=now, **extra)
    return CertificateAuthority(cert, key, (root.certificate,))


def leaf_for(
    issuer: CertificateAuthority, spiffe_id: str, **kwargs: object
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = new_private_key()
    kwargs.setdefault("now", NOW)
    cert = issue_leaf(issuer, key.public_key(), spiffe_id=spiffe_id, **kwargs)  # type: ignore[arg-type]
    return cert, key


def key_usage(*, sign: bool = False, cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


_DEFAULT = object()


def craft(
    *,
    issuer: CertificateAuthority | tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    subject: x509.Name | None = None,
    key: ec.EllipticCurvePrivateKey | None = None,
    ca: bool | None = False,
    path_length: int | None = None,
    usage: x509.KeyUsage | object | None = _DEFAULT,
    eku: Sequence[x509.ObjectIdentifier] | None = (
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    ),
    sans: Sequence[x509.GeneralName] | None = (),
    not_before: datetime = NOW - timedelta(hours=1),
    not_after: datetime = NOW + timedelta(hours=1),
    name_constraints: x509.NameConstraints | None = None,
    extra: Sequence[tuple[x509.ExtensionType, bool]] = (),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A certificate with exactly the given properties. ``issuer`` None means self-signed;
    a (name, key) pair signs with that key under that issuer name."""
    key = key or new_private_key()
    subject = subject or x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshgate")])
    if issuer is None:
        issuer_name, issuer_key = subject, key
    elif isinstance(issuer, CertificateAuthority):
        issuer_name, issuer_key = issuer.certificate.subject, issuer.key
    else:
        issuer_name, issuer_key = issuer
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca, path_length), critical=True)
    if usage is _DEFAULT:
        usage = key_usage(sign=not ca, cert_sign=bool(ca))
    if isinstance(usage, x509.KeyUsage):
        builder = builder.add_extension(usage, critical=True)
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    if name_constraints is not None:
        builder = builder.add_extension(name_constraints, critical=True)
    builder = builder.add_extension(
        x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
    )
    for extension, critical in extra:
        builder = builder.add_extension(extension, critical)
    return builder.sign(issuer_key, hashes.SHA256()), key


def uri(value: str) -> x509.UniformResourceIdentifier:
    return x509.UniformResourceIdentifier(value)


def zone_subject(zone: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshgate"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "zone"),
            x509.NameAttribute(NameOID.COMMON_NAME, zone),
        ]
    )
