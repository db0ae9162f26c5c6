from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from meshgate.pki.ca import CertificateAuthority
from meshgate.pki.keys import (
    certificate_from_pem,
    certificate_to_pem,
    certificates_from_pem,
    certificates_to_pem,
    csr_from_pem,
    csr_to_pem,
    fingerprint,
    make_csr,
    new_private_key,
    private_key_from_pem,
    private_key_to_pem,
)


def test_new_private_key_is_p256() -> None:
    key = new_private_key()
    assert isinstance(key.curve, ec.SECP256R1)
    assert new_private_key().public_key() != key.public_key()


def test_private_key_pem_round_trip() -> None:
    key = new_private_key()
    pem = private_key_to_pem(key)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert private_key_from_pem(pem).private_numbers() == key.private_numbers()


def test_private_key_from_pem_refuses_other_curves() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ValueError, match="P-256"):
        private_key_from_pem(p384)


def test_certificate_pem_helpers(root: CertificateAuthority, eu: CertificateAuthority) -> None:
    assert certificate_from_pem(certificate_to_pem(root.certificate)) == root.certificate
    bundle = certificates_to_pem([eu.certificate, root.certificate])
    assert certificates_from_pem(bundle) == [eu.certificate, root.certificate]
    with pytest.raises(ValueError, match="exactly one certificate"):
        certificate_from_pem(bundle)


def test_fingerprint_matches_openssl(root: CertificateAuthority, tmp_path: Path) -> None:
    path = tmp_path / "root.pem"
    path.write_bytes(root.certificate_pem())
    out = subprocess.run(
        ["openssl", "x509", "-in", str(path), "-noout", "-fingerprint", "-sha256"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    openssl_hex = out.strip().split("=", 1)[1].replace(":", "").lower()
    fp = fingerprint(root.certificate)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", fp)
    assert fp == "sha256:" + openssl_hex


def test_make_csr_carries_the_spiffe_id_and_a_valid_signature() -> None:
    key = new_private_key()
    csr = csr_from_pem(csr_to_pem(make_csr(key, "spiffe://mesh.example/zone/eu/cp")))
    assert csr.is_signature_valid
    assert csr.public_key() == key.public_key()
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://mesh.example/zone/eu/cp"]


def test_make_csr_refuses_an_invalid_spiffe_id() -> None:
    with pytest.raises(ValueError, match="query"):
        make_csr(new_private_key(), "spiffe://mesh.example/svc/a?b")
