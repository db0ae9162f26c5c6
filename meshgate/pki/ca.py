"""The mesh root CA (held by the global CP) and the per-zone intermediates it issues.

Root: self-signed, ECDSA P-256, pathLen 1, name constraints permitting only URIs of its trust
domain, URI SAN ``spiffe://<td>``. Intermediate: one per zone, pathLen 0, subject
``O=meshgate, OU=zone, CN=<zone>``, issued from the zone CP's CSR (the zone CP keeps the key).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from meshgate.pki.identities import is_dns_label, require_dns_label
from meshgate.pki.keys import certificate_to_pem, certificates_to_pem, new_private_key, require_p256
from meshgate.pki.spiffe import SpiffeId, validate_trust_domain
from meshgate.pki.validity import validity_window

ORGANIZATION = "meshgate"
ZONE_UNIT = "zone"
ROOT_TTL = timedelta(days=3650)
INTERMEDIATE_TTL = timedelta(days=365)
_ROOT_CN_PREFIX = "meshgate root CA "


def _root_common_name(trust_domain: str) -> str:
    cn = _ROOT_CN_PREFIX + trust_domain
    if len(cn) <= 64:  # the X.520 upper bound for a common name
        return cn
    digest = hashlib.sha256(trust_domain.encode()).hexdigest()[:8]
    return f"{_ROOT_CN_PREFIX}{trust_domain[: 64 - len(_ROOT_CN_PREFIX) - 9]}~{digest}"


def ca_trust_domain(cert: x509.Certificate) -> str:
    """The trust domain of a meshgate CA certificate (its ``spiffe://<td>`` URI SAN)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise ValueError("CA certificate has no SPIFFE trust domain URI SAN") from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise ValueError(f"CA certificate must have exactly one URI SAN, has {len(uris)}")
    sid = SpiffeId.parse(uris[0])
    if sid.path:
        raise ValueError(f"CA certificate URI SAN {uris[0]!r} must name a trust domain only")
    return sid.trust_domain


def zone_of_intermediate(cert: x509.Certificate) -> str | None:
    """The zone named by a zone intermediate's subject, or None for any other certificate."""
    if cert.issuer == cert.subject:
        return None
    try:
        if not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return None
    except x509.ExtensionNotFound:
        return None
    subject = cert.subject

    def single(oid: x509.ObjectIdentifier) -> str | None:
        values = subject.get_attributes_for_oid(oid)
        return values[0].value if len(values) == 1 and isinstance(values[0].value, str) else None

    if single(NameOID.ORGANIZATION_NAME) != ORGANIZATION:
        return None
    if single(NameOID.ORGANIZATIONAL_UNIT_NAME) != ZONE_UNIT:
        return None
    zone = single(NameOID.COMMON_NAME)
    return zone if zone is not None and is_dns_label(zone) else None


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


@dataclass(frozen=True)
class CertificateAuthority:
    """A CA certificate with its private key. ``chain`` holds the issuers above it, nearest
    first (empty for a root, ``(root,)`` for a zone intermediate)."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey = field(repr=False)
    chain: tuple[x509.Certificate, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "chain", tuple(self.chain))
        if not _is_ca(self.certificate):
            raise ValueError("certificate is not a CA certificate (basicConstraints CA false)")
        if self.key.public_key() != self.certificate.public_key():
            raise ValueError("private key does not match the CA certificate")
        child = self.certificate
        for parent in self.chain:
            try:
                child.verify_directly_issued_by(parent)
            except (ValueError, TypeError, InvalidSignature):
                raise ValueError(
                    f"chain is broken: {child.subject.rfc4514_string()} was not issued by "
                    f"{parent.subject.rfc4514_string()}"
                ) from None
            child = parent
        ca_trust_domain(self.certificate)

    @property
    def trust_domain(self) -> str:
        return ca_trust_domain(self.certificate)

    @property
    def zone(self) -> str | None:
        """The zone of a zone intermediate, None for the root."""
        return zone_of_intermediate(self.certificate)

    @property
    def root(self) -> x509.Certificate:
        return self.chain[-1] if self.chain else self.certificate

    def certificate_pem(self) -> bytes:
        return certificate_to_pem(self.certificate)

    def chain_pem(self) -> bytes:
        """PEM of the issuers above this CA (``chain``); empty for a root."""
        return certificates_to_pem(self.chain)

    def presented_chain(self, leaf: x509.Certificate) -> tuple[x509.Certificate, ...]:
        """What a TLS endpoint holding ``leaf`` (issued by this CA) sends: the leaf, then every
        CA above it except the root (peers already trust the root)."""
        issuers = (self.certificate, *self.chain)
        return (leaf, *issuers[:-1])

    def presented_chain_pem(self, leaf: x509.Certificate) -> bytes:
        return certificates_to_pem(self.presented_chain(leaf))


def create_root_ca(
    trust_domain: str, *, mesh: str, now: datetime, ttl: timedelta = ROOT_TTL
) -> CertificateAuthority:
    """A new self-signed root CA for ``trust_domain`` of mesh ``mesh``."""
    validate_trust_domain(trust_domain)
    require_dns_label(mesh, "mesh")
    not_before, not_after = validity_window(now, ttl, None)
    key = new_private_key()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, mesh),
            x509.NameAttribute(NameOID.COMMON_NAME, _root_common_name(trust_domain)),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]),
            critical=False,
        )
        .add_extension(
            x509.NameConstraints(
                permitted_subtrees=[x509.UniformResourceIdentifier(trust_domain)],
                excluded_subtrees=None,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return CertificateAuthority(cert, key, ())


def issue_intermediate(
    root: CertificateAuthority,
    csr: x509.CertificateSigningRequest,
    *,
    zone: str,
    trust_domain: str,
    now: datetime,
    ttl: timedelta = INTERMEDIATE_TTL,
) -> x509.Certificate:
    """Zone ``zone``'s intermediate CA certificate for the key of ``csr`` (pathLen 0).

    Only the CSR's public key is used, after its signature is checked; the subject and SAN come
    from ``zone`` and ``trust_domain``. Validity never extends past the root's notAfter.
    """
    require_dns_label(zone, "zone")
    if root.chain or root.certificate.issuer != root.certificate.subject:
        raise ValueError("zone intermediates are issued by the root CA only")
    if trust_domain != root.trust_domain:
        raise ValueError(f"trust domain {trust_domain!r} differs from the root CA's {root.trust_domain!r}")
    if not csr.is_signature_valid:
        raise ValueError("the CSR's signature is invalid")
    public_key = require_p256(csr.public_key(), "the zone CA key")
    not_before, not_after = validity_window(now, ttl, root.certificate)
    root_ski = root.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    return (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ZONE_UNIT),
                    x509.NameAttribute(NameOID.COMMON_NAME, zone),
                ]
            )
        )
        .issuer_name(root.certificate.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski.value),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]),
            critical=False,
        )
        .sign(root.key, hashes.SHA256())
    )


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )
