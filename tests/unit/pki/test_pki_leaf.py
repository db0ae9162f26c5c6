from __future__ import annotations

import ipaddress
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from meshgate.pki.ca import CertificateAuthority
from meshgate.pki.keys import make_csr, new_private_key
from meshgate.pki.leaf import issue_leaf
from tests.unit.pki.pki_certs import NOW, TD, leaf_for, zone_authority

SVC = f"spiffe://{TD}/svc/api"


def test_leaf_profile(eu: CertificateAuthority) -> None:
    leaf, key = leaf_for(eu, SVC)
    leaf.verify_directly_issued_by(eu.certificate)
    assert leaf.public_key() == key.public_key()
    bc = leaf.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical
    assert not bc.value.ca
    ku = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical
    assert ku.value.digital_signature
    assert not (ku.value.key_cert_sign)
    assert not (ku.value.crl_sign)
    assert not (ku.value.key_agreement)
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == [x509.UniformResourceIdentifier(SVC)]
    assert leaf.not_valid_before_utc == NOW - timedelta(minutes=5)
    assert leaf.not_valid_after_utc == NOW + timedelta(hours=24)


def test_leaf_usages_names_and_key_agreement(eu: CertificateAuthority) -> None:
    leaf, _ = leaf_for(
        eu,
        SVC,
        dns_names=["api.eu.svc.meshgate"],
        ip_addresses=["10.0.0.7", ipaddress.ip_address("fd00::7")],
        client=False,
        key_agreement=True,
    )
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert leaf.extensions.get_extension_for_class(x509.KeyUsage).value.key_agreement
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [SVC]
    assert san.get_values_for_type(x509.DNSName) == ["api.eu.svc.meshgate"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.0.0.7"),
        ipaddress.ip_address("fd00::7"),
    ]


def test_leaf_from_csr_uses_its_key_not_its_names(eu: CertificateAuthority) -> None:
    key = new_private_key()
    csr = make_csr(key, f"spiffe://{TD}/global/cp")  # asks for more than it gets
    leaf = issue_leaf(eu, csr, spiffe_id=SVC, now=NOW)
    assert leaf.public_key() == key.public_key()
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [SVC]


def test_leaf_refuses_a_csr_with_a_bad_signature(eu: CertificateAuthority) -> None:
    der = bytearray(make_csr(new_private_key(), SVC).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01
    with pytest.raises(ValueError, match="signature is invalid"):
        issue_leaf(eu, x509.load_der_x509_csr(bytes(der)), spiffe_id=SVC, now=NOW)


def test_leaf_never_outlives_its_issuer(root: CertificateAuthority) -> None:
    short = zone_authority(root, "eu", ttl=timedelta(hours=2))
    leaf, _ = leaf_for(short, SVC, ttl=timedelta(hours=24))
    assert leaf.not_valid_after_utc == short.certificate.not_valid_after_utc


@pytest.mark.parametrize("ttl", [timedelta(0), timedelta(seconds=-1)])
def test_leaf_refuses_a_non_positive_ttl(eu: CertificateAuthority, ttl: timedelta) -> None:
    with pytest.raises(ValueError, match="ttl must be positive"):
        leaf_for(eu, SVC, ttl=ttl)


@pytest.mark.parametrize(
    ("spiffe_id", "kwargs", "message"),
    [
        ("spiffe://other.example/svc/api", {}, "outside the issuer's trust domain"),
        (f"spiffe://{TD}", {}, "names a trust domain"),
        (f"spiffe://{TD}/svc/a?b", {}, "query"),
        (SVC, {"server": False, "client": False}, "server or client"),
        (SVC, {"now": NOW + timedelta(days=400)}, "expired"),
        (SVC, {"now": NOW.replace(tzinfo=None)}, "timezone-aware"),
    ],
)
def test_leaf_refusals(
    eu: CertificateAuthority, spiffe_id: str, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        leaf_for(eu, spiffe_id, **kwargs)


def test_leaf_refuses_keys_other_than_p256(eu: CertificateAuthority) -> None:
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    with pytest.raises(ValueError, match="P-256"):
        issue_leaf(eu, p384, spiffe_id=SVC, now=NOW)
