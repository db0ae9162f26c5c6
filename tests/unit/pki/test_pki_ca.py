from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from meshgate.pki.ca import (
    CertificateAuthority,
    create_root_ca,
    issue_intermediate,
    zone_of_intermediate,
)
from meshgate.pki.keys import certificate_to_pem, certificates_to_pem, make_csr, new_private_key
from tests.unit.pki.pki_certs import NOW, TD, craft, leaf_for, uri, zone_authority


def _openssl_verify(
    tmp_path: Path,
    root: x509.Certificate,
    leaf: x509.Certificate,
    untrusted: list[x509.Certificate],
) -> subprocess.CompletedProcess[str]:
    (tmp_path / "root.pem").write_bytes(certificate_to_pem(root))
    (tmp_path / "leaf.pem").write_bytes(certificate_to_pem(leaf))
    args = ["openssl", "verify", "-x509_strict", "-attime", str(int(NOW.timestamp()))]
    args += ["-CAfile", str(tmp_path / "root.pem")]
    if untrusted:
        (tmp_path / "untrusted.pem").write_bytes(certificates_to_pem(untrusted))
        args += ["-untrusted", str(tmp_path / "untrusted.pem")]
    return subprocess.run([*args, str(tmp_path / "leaf.pem")], capture_output=True, text=True)


def test_root_ca_profile(root: CertificateAuthority) -> None:
    cert = root.certificate
    assert cert.subject == cert.issuer
    cert.verify_directly_issued_by(cert)
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    subject = {a.oid: a.value for a in cert.subject}
    assert subject == {
        NameOID.ORGANIZATION_NAME: "meshgate",
        NameOID.ORGANIZATIONAL_UNIT_NAME: "default",
        NameOID.COMMON_NAME: f"meshgate root CA {TD}",
    }
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical
    assert bc.value.ca
    assert bc.value.path_length == 1
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical
    assert ku.value.key_cert_sign
    assert ku.value.crl_sign
    assert not ku.value.digital_signature
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == [uri(f"spiffe://{TD}")]
    nc = cert.extensions.get_extension_for_class(x509.NameConstraints)
    assert nc.critical
    assert nc.value.permitted_subtrees == [uri(TD)]
    assert nc.value.excluded_subtrees is None
    assert cert.not_valid_before_utc == NOW - timedelta(minutes=5)
    assert cert.not_valid_after_utc == NOW + timedelta(days=3650)
    assert root.chain == ()
    assert root.chain_pem() == b""
    assert root.trust_domain == TD
    assert root.zone is None


def test_root_ca_common_name_stays_within_64_characters() -> None:
    long_td = "a" * 60 + ".example"
    cert = create_root_ca(long_td, mesh="default", now=NOW).certificate
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert isinstance(cn, str)
    assert len(cn) <= 64
    assert cn.startswith("meshgate root CA aaaa")
    other = create_root_ca("a" * 60 + ".example2", mesh="default", now=NOW).certificate
    assert other.subject != cert.subject


@pytest.mark.parametrize(
    ("trust_domain", "mesh", "message"),
    [("Mesh.example", "default", "lowercase"), (TD, "Default", "DNS label"), (TD, "", "DNS")],
)
def test_root_ca_refuses_bad_names(trust_domain: str, mesh: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_root_ca(trust_domain, mesh=mesh, now=NOW)


def test_openssl_accepts_the_hierarchy(
    tmp_path: Path, root: CertificateAuthority, eu: CertificateAuthority
) -> None:
    leaf, _ = leaf_for(eu, f"spiffe://{TD}/svc/api")
    result = _openssl_verify(tmp_path, root.certificate, leaf, [eu.certificate])
    assert result.returncode == 0, result.stdout + result.stderr


def test_name_constraints_stop_an_intermediate_issuing_for_another_trust_domain(
    tmp_path: Path, root: CertificateAuthority, eu: CertificateAuthority
) -> None:
    # issue_leaf refuses this, so the rogue leaf is made by hand with the zone's key
    rogue, _ = craft(issuer=eu, sans=[uri("spiffe://other.example/svc/api")])
    result = _openssl_verify(tmp_path, root.certificate, rogue, [eu.certificate])
    assert result.returncode != 0
    assert "permitted subtree violation" in result.stdout + result.stderr


def test_intermediate_profile(root: CertificateAuthority) -> None:
    key = new_private_key()
    cert = issue_intermediate(
        root,
        make_csr(key, f"spiffe://{TD}/zone/eu/cp"),
        zone="eu",
        trust_domain=TD,
        now=NOW,
        ttl=timedelta(days=30),
    )
    cert.verify_directly_issued_by(root.certificate)
    assert cert.public_key() == key.public_key()
    assert cert.subject.rfc4514_string() == "CN=eu,OU=zone,O=meshgate"
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical
    assert bc.value.ca
    assert bc.value.path_length == 0
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical
    assert ku.value.key_cert_sign
    assert ku.value.crl_sign
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    root_ski = root.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert aki.key_identifier == root_ski.value.digest
    assert cert.not_valid_before_utc == NOW - timedelta(minutes=5)
    assert cert.not_valid_after_utc == NOW + timedelta(days=30)
    assert zone_of_intermediate(cert) == "eu"
    ca = CertificateAuthority(cert, key, (root.certificate,))
    assert ca.zone == "eu"
    assert ca.trust_domain == TD
    assert ca.chain_pem() == root.certificate_pem()


def test_zone_of_intermediate_is_none_for_other_certificates(
    root: CertificateAuthority, eu: CertificateAuthority
) -> None:
    leaf, _ = leaf_for(eu, f"spiffe://{TD}/svc/api")
    assert zone_of_intermediate(root.certificate) is None
    assert zone_of_intermediate(leaf) is None
    # a root whose mesh is named "zone" still names no zone
    zone_mesh_root = create_root_ca(TD, mesh="zone", now=NOW)
    assert zone_of_intermediate(zone_mesh_root.certificate) is None


def test_intermediate_never_outlives_the_root(root: CertificateAuthority) -> None:
    late = NOW + timedelta(days=3600)
    ca = zone_authority(root, "eu", now=late, ttl=timedelta(days=365))
    assert ca.certificate.not_valid_after_utc == root.certificate.not_valid_after_utc


def test_intermediate_refuses_a_csr_with_a_bad_signature(root: CertificateAuthority) -> None:
    der = bytearray(
        make_csr(new_private_key(), f"spiffe://{TD}/zone/eu/cp").public_bytes(serialization.Encoding.DER)
    )
    der[-1] ^= 0x01  # last byte of the ECDSA signature
    csr = x509.load_der_x509_csr(bytes(der))
    with pytest.raises(ValueError, match="signature is invalid"):
        issue_intermediate(root, csr, zone="eu", trust_domain=TD, now=NOW)


def test_intermediate_refusals(root: CertificateAuthority, eu: CertificateAuthority) -> None:
    csr = make_csr(new_private_key(), f"spiffe://{TD}/zone/us/cp")
    with pytest.raises(ValueError, match="differs from the root"):
        issue_intermediate(root, csr, zone="us", trust_domain="other.example", now=NOW)
    with pytest.raises(ValueError, match="root CA only"):
        issue_intermediate(eu, csr, zone="us", trust_domain=TD, now=NOW)
    with pytest.raises(ValueError, match="DNS label"):
        issue_intermediate(root, csr, zone="US", trust_domain=TD, now=NOW)
    with pytest.raises(ValueError, match="expired"):
        issue_intermediate(root, csr, zone="us", trust_domain=TD, now=NOW + timedelta(days=3651))
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(ValueError, match="P-256"):
        issue_intermediate(
            root, make_csr(p384, f"spiffe://{TD}/zone/us/cp"), zone="us", trust_domain=TD, now=NOW
        )


def test_certificate_authority_checks_its_parts(
    root: CertificateAuthority, eu: CertificateAuthority, us: CertificateAuthority
) -> None:
    with pytest.raises(ValueError, match="does not match"):
        CertificateAuthority(eu.certificate, us.key, (root.certificate,))
    with pytest.raises(ValueError, match="chain is broken"):
        CertificateAuthority(eu.certificate, eu.key, (us.certificate,))
    leaf, leaf_key = leaf_for(eu, f"spiffe://{TD}/svc/api")
    with pytest.raises(ValueError, match="not a CA"):
        CertificateAuthority(leaf, leaf_key, (eu.certificate, root.certificate))


def test_presented_chain_leaves_out_the_root(root: CertificateAuthority, eu: CertificateAuthority) -> None:
    leaf, _ = leaf_for(eu, f"spiffe://{TD}/svc/api")
    assert eu.presented_chain(leaf) == (leaf, eu.certificate)
    direct, _ = leaf_for(root, f"spiffe://{TD}/svc/api")
    assert root.presented_chain(direct) == (direct,)
