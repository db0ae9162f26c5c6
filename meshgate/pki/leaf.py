"""Leaf certificates (X.509-SVIDs): one SPIFFE URI SAN, short-lived, never CAs."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshgate.pki.ca import ORGANIZATION, CertificateAuthority
from meshgate.pki.keys import require_p256
from meshgate.pki.spiffe import SpiffeId
from meshgate.pki.validity import validity_window

LEAF_TTL = timedelta(hours=24)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def issue_leaf(
    issuer: CertificateAuthority,
    public_key_or_csr: ec.EllipticCurvePublicKey | x509.CertificateSigningRequest,
    *,
    spiffe_id: str | SpiffeId,
    now: datetime,
    ttl: timedelta = LEAF_TTL,
    dns_names: Iterable[str] = (),
    ip_addresses: Iterable[IPAddress | str] = (),
    server: bool = True,
    client: bool = True,
    key_agreement: bool = False,
) -> x509.Certificate:
    """A leaf for ``spiffe_id`` signed by ``issuer``.

    When given a CSR, its signature is checked and only its public key is used (the issuer
    decides the names). The trust domain of ``spiffe_id`` must be the issuer's. notAfter is
    ``now + ttl`` cut to the issuer's notAfter; notBefore is backdated by the clock skew.
    """
    sid = spiffe_id if isinstance(spiffe_id, SpiffeId) else SpiffeId.parse(spiffe_id)
    if not sid.path:
        raise ValueError(f"{sid} names a trust domain, not a workload")
    if sid.trust_domain != issuer.trust_domain:
        raise ValueError(f"{sid} is outside the issuer's trust domain {issuer.trust_domain!r}")
    if not (server or client):
        raise ValueError("a leaf must be usable for server or client authentication (or both)")
    if isinstance(public_key_or_csr, x509.CertificateSigningRequest):
        if not public_key_or_csr.is_signature_valid:
            raise ValueError("the CSR's signature is invalid")
        key = require_p256(public_key_or_csr.public_key(), "the leaf key")
    else:
        key = require_p256(public_key_or_csr, "the leaf key")
    not_before, not_after = validity_window(now, ttl, issuer.certificate)

    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(str(sid))]
    names += [x509.DNSName(name) for name in dns_names]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    usages = [
        oid
        for oid, wanted in (
            (ExtendedKeyUsageOID.SERVER_AUTH, server),
            (ExtendedKeyUsageOID.CLIENT_AUTH, client),
        )
        if wanted
    ]
    issuer_ski = issuer.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION)]))
        .issuer_name(issuer.certificate.subject)
        .public_key(key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=key_agreement,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski.value),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(issuer.key, hashes.SHA256())
    )
