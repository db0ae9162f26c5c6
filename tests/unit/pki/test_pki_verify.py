"""verify_peer: the accepted shapes, then every rejection with a certificate built to trigger it."""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, ObjectIdentifier

from meshgate.pki.ca import CertificateAuthority, create_root_ca
from meshgate.pki.identities import Identity
from meshgate.pki.keys import (
    certificate_from_pem,
    csr_to_pem,
    make_csr,
    new_private_key,
    private_key_to_pem,
)
from meshgate.pki.verify import VerificationError, VerifiedPeer, verify_peer
from tests.unit.pki.pki_certs import (
    NOW,
    TD,
    craft,
    key_usage,
    leaf_for,
    uri,
    zone_authority,
    zone_subject,
)

SVC = f"spiffe://{TD}/svc/api"


def check(
    chain: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    *,
    usage: str = "client",
    trust_domain: str = TD,
    now: object = NOW,
) -> VerifiedPeer:
    return verify_peer(chain, roots, trust_domain=trust_domain, now=now, usage=usage)  # type: ignore[arg-type]


def refused(
    chain: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    match: str,
    **kwargs: object,
) -> None:
    with pytest.raises(VerificationError, match=match):
        check(chain, roots, **kwargs)  # type: ignore[arg-type]


# --- accepted --------------------------------------------------------------------------------


def test_service_from_a_zone_intermediate(root: CertificateAuthority, eu: CertificateAuthority) -> None:
    leaf, _ = leaf_for(eu, SVC)
    peer = check([leaf, eu.certificate], [root.certificate])
    assert str(peer.spiffe_id) == SVC
    assert peer.identity == Identity("service", None, "api")
    assert peer.issuer_zone == "eu"
    assert peer.leaf == leaf
    assert peer.path == (leaf, eu.certificate, root.certificate)


def test_service_from_the_root(root: CertificateAuthority) -> None:
    leaf, _ = leaf_for(root, SVC)
    peer = check([leaf], [root.certificate], usage="server")
    assert peer.issuer_zone is None


@pytest.mark.parametrize(
    ("path", "identity"),
    [
        ("/zone/eu/cp", Identity("zone-cp", "eu", "eu")),
        ("/zone/eu/ingress/in-1", Identity("ingress", "eu", "in-1")),
        ("/zone/eu/edge/e1", Identity("edge", "eu", "e1")),
    ],
)
def test_zone_identities_from_their_own_zone(
    root: CertificateAuthority, eu: CertificateAuthority, path: str, identity: Identity
) -> None:
    leaf, _ = leaf_for(eu, f"spiffe://{TD}{path}")
    peer = check([leaf, eu.certificate], [root.certificate])
    assert peer.identity == identity
    assert peer.issuer_zone == "eu"


def test_global_cp_from_the_root(root: CertificateAuthority) -> None:
    leaf, _ = leaf_for(root, f"spiffe://{TD}/global/cp")
    assert check([leaf], [root.certificate]).identity.role == "global-cp"


def test_unrelated_and_duplicate_certificates_in_the_chain_are_skipped(
    root: CertificateAuthority, eu: CertificateAuthority, us: CertificateAuthority
) -> None:
    leaf, _ = leaf_for(eu, SVC)
    peer = check([leaf, us.certificate, eu.certificate, eu.certificate], [root.certificate])
    assert peer.issuer_zone == "eu"


def test_root_rotation_both_roots_trusted(root: CertificateAuthority) -> None:
    new_root = create_root_ca(TD, mesh="default", now=NOW)
    assert new_root.certificate.subject == root.certificate.subject  # same name, other key
    new_eu = zone_authority(new_root, "eu")
    leaf, _ = leaf_for(new_eu, SVC)
    peer = check([leaf, new_eu.certificate], [root.certificate, new_root.certificate])
    assert peer.path[-1] == new_root.certificate


# --- chain --------------------------------------------------------------------------------------


def test_refuses_a_chain_to_an_untrusted_root(root: CertificateAuthority) -> None:
    stranger = create_root_ca(TD, mesh="other", now=NOW)
    leaf, _ = leaf_for(stranger, SVC)
    refused([leaf], [root.certificate], "does not lead to a trusted root")


def test_refuses_when_the_intermediate_is_missing(
    root: CertificateAuthority, eu: CertificateAuthority
) -> None:
    leaf, _ = leaf_for(eu, SVC)
    refused([leaf], [root.certificate], "does not lead to a trusted root")


def test_refuses_an_empty_chain(root: CertificateAuthority) -> None:
    refused([], [root.certificate], "presented no certificate")


def test_refuses_a_leaf_with_a_bad_signature(root: CertificateAuthority, eu: CertificateAuthority) -> None:
    # names the eu intermediate as issuer but is signed by another key
    forged, _ = craft(issuer=(eu.certificate.subject, new_private_key()), sans=[uri(SVC)])
    refused([forged, eu.certificate], [root.certificate], "bad signature")


def test_refuses_an_intermediate_with_a_bad_signature(root: CertificateAuthority) -> None:
    impostor_root = create_root_ca(TD, mesh="default", now=NOW)  # same subject as root
    fake_eu = zone_authority(impostor_root, "eu")
    leaf, _ = leaf_for(fake_eu, SVC)
    refused([leaf, fake_eu.certificate], [root.certificate], "bad signature")


def test_refuses_a_sha1_signature(root: CertificateAuthority, tmp_path: Path) -> None:
    # cryptography no longer signs with SHA-1: openssl makes the certificate
    (tmp_path / "ca.pem").write_bytes(root.certificate_pem())
    (tmp_path / "ca.key").write_bytes(private_key_to_pem(root.key))
    (tmp_path / "leaf.csr").write_bytes(csr_to_pem(make_csr(new_private_key(), SVC)))
    (tmp_path / "ext.cnf").write_text(
        f"subjectAltName=URI:{SVC}\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=critical,CA:FALSE\n"
    )
    subprocess.run(
        [
            "openssl",
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            "7",
            "-days",
            "3650",
            "-sha1",
            "-extfile",
            "ext.cnf",
            "-out",
            "leaf.pem",
        ],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    leaf = certificate_from_pem((tmp_path / "leaf.pem").read_bytes())
    assert isinstance(leaf.signature_hash_algorithm, hashes.SHA1)
    refused(
        [leaf],
        [root.certificate],
        "signature not verifiable|weak hash",
        now=leaf.not_valid_before_utc + timedelta(hours=1),
    )


# --- time ---------------------------------------------------------------------------------------


def test_refuses_an_expired_leaf(root: CertificateAuthority, eu: CertificateAuthority) -> None:
    leaf, _ = leaf_for(eu, SVC, ttl=timedelta(hours=1))
    check([leaf, eu.certificate], [root.certificate], now=NOW + timedelta(minutes=59))
    refused([leaf, eu.certificate], [root.certificate], "expired", now=NOW + timedelta(hours=1))


def test_refuses_a_leaf_not_yet_valid(root: CertificateAuthority, eu: CertificateAuthority) -> None:
    leaf, _ = craft(issuer=eu, sans=[uri(SVC)], not_before=NOW + timedelta(minutes=1))
    refused([leaf, eu.certificate], [root.certificate], "not yet valid")


def test_refuses_an_expired_intermediate(root: CertificateAuthority) -> None:
    expired_eu, zone_key = craft(
        issuer=root,
        subject=zone_subject("eu"),
        ca=True,
        path_length=0,
        sans=[uri(f"spiffe://{TD}")],
        not_before=NOW - timedelta(days=2),
        not_after=NOW - timedelta(days=1),
    )
    zone = CertificateAuthority(expired_eu, zone_key, (root.certificate,))
    leaf, _ = craft(issuer=zone, sans=[uri(SVC)])
    refused([leaf, expired_eu], [root.certificate], "expired")


def test_refuses_an_intermediate_not_yet_valid(root: CertificateAuthority) -> None:
    future_eu, zone_key = craft(
        issuer=root,
        subject=zone_subject("eu"),
        ca=True,
        path_length=0,
        sans=[uri(f"spiffe://{TD}")],
        not_before=NOW + timedelta(minutes=10),
        not_after=NOW + timedelta(days=1),
    )
    zone = CertificateAuthority(future_eu, zone_key, (root.certificate,))
    leaf, _ = craft(issuer=zone, sans=[uri(SVC)])
    refused([leaf, future_eu], [root.certificate], "not yet valid")


def test_refuses_a_certificate_with_malformed_extensions(
    root: CertificateAuthority, eu: CertificateAuthority
) -> None:
    broken_san = x509.UnrecognizedExtension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, b"\x01\x02")
    leaf, _ = craft(issuer=eu, extra=[(broken_san, False)])
    refused([leaf, eu.certificate], [root.certificate], "malformed extensions")


def test_refuses_an_expired_root() -> None:
    old_root = create_root_ca(TD, mesh="default", now=NOW - timedelta(days=20), ttl=timedelta(days=10))
    leaf, _ = craft(issuer=old_root, sans=[uri(SVC)])
    refused([leaf], [old_root.certificate], "expired")


def test_refuses_a_naive_clock(root: CertificateAuthority) -> None:
    leaf, _ = leaf_for(root, SVC)
    with pytest.raises(ValueError, match="timezone-aware"):
        check([leaf], [root.certificate], now=NOW.replace(tzinfo=None))


# --- CA rules -----------------------------------------------------------------------------------


def test_refuses_a_leaf_that_is_a_ca(root: CertificateAuthority, eu: CertificateAuthority) -> None:
    leaf, _ = craft(issuer=eu, ca=True, usage=key_usage(sign=True), sans=[uri(SVC)])
    refused([leaf, eu.certificate], [root.certificate], "is a CA")


def test_refuses_an_issuer_that_is_not_a_ca(root: CertificateAuthority) -> None:
    not_ca_cert, not_ca_key = craft(
        issuer=root,
        subject=zone_subject("eu"),
        ca=False,
        usage=key_usage(sign=True, cert_sign=True),
    )
    leaf, _ = craft(issuer=(not_ca_cert.subject, not_ca_key), sans=[uri(SVC)])
    refused([leaf, not_ca_cert], [root.certificate], "is not a CA")


def test_refuses_an_issuer_without_basic_constraints(root: CertificateAuthority) -> None:
    bare, bare_key = craft(issuer=root, subject=zone_subject("eu"), ca=None, usage=key_usage(cert_sign=True))
    leaf, _ = craft(issuer=(bare.subject, bare_key), sans=[uri(SVC)])
    refused([leaf, bare], [root.certificate], "is not a CA")


def test_refuses_an_issuer_without_key_cert_sign(root: CertificateAuthority) -> None:
    weak, weak_key = craft(
        issuer=root, subject=zone_subject("eu"), ca=True, path_length=0, usage=key_usage(sign=True)
    )
    leaf, _ = craft(issuer=(weak.subject, weak_key), sans=[uri(SVC)])
    refused([leaf, weak], [root.certificate], "lacks keyUsage keyCertSign")


def test_refuses_a_path_length_violation(root: CertificateAuthority, eu: CertificateAuthority) -> None:
    sub_subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "sub")])
    sub, sub_key = craft(issuer=eu, subject=sub_subject, ca=True, sans=[uri(f"spiffe://{TD}")])
    leaf, _ = craft(issuer=(sub_subject, sub_key), sans=[uri(SVC)])
    refused([leaf, sub, eu.certificate], [root.certificate], "path length violated")


def test_refuses_an_issuer_whose_eku_excludes_the_usage(root: CertificateAuthority) -> None:
    server_only_ca, ca_key = craft(
        issuer=root,
        subject=zone_subject("eu"),
        ca=True,
        path_length=0,
        eku=[ExtendedKeyUsageOID.SERVER_AUTH],
        sans=[uri(f"spiffe://{TD}")],
    )
    leaf, _ = craft(issuer=(server_only_ca.subject, ca_key), sans=[uri(SVC)])
    check([leaf, server_only_ca], [root.certificate], usage="server")
    refused(
        [leaf, server_only_ca],
        [root.certificate],
        "not allowed to issue for client",
        usage="client",
    )


def test_refuses_an_unknown_critical_extension(root: CertificateAuthority, eu: CertificateAuthority) -> None:
    odd = x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00")
    leaf, _ = craft(issuer=eu, sans=[uri(SVC)], extra=[(odd, True)])
    refused([leaf, eu.certificate], [root.certificate], "unsupported critical extension")
    tolerated, _ = craft(issuer=eu, sans=[uri(SVC)], extra=[(odd, False)])
    check([tolerated, eu.certificate], [root.certificate])


def test_refuses_a_self_signed_leaf_even_when_trusted() -> None:
    leaf, _ = craft(issuer=None, sans=[uri(SVC)])
    refused([leaf], [leaf], "is not a CA")


# --- name constraints -------------------------------------------------------------------------


def test_root_name_constraints_refuse_another_trust_domain(
    root: CertificateAuthority, eu: CertificateAuthority
) -> None:
    rogue, _ = craft(issuer=eu, sans=[uri("spiffe://other.example/svc/api")])
    refused(
        [rogue, eu.certificate],
        [root.certificate],
        "name constraint violated: spiffe://other.example/svc/api",
        trust_domain="other.example",
    )


def test_dns_and_ip_name_constraints(root: CertificateAuthority) -> None:
    constraints = x509.NameConstraints(
        permitted_subtrees=[
            x509.DNSName("svc.meshgate"),
            x509.IPAddress(ipaddress.ip_network("10.0.0.0/8")),
        ],
        excluded_subtrees=[x509.DNSName("bad.svc.meshgate")],
    )
    ca_cert, ca_key = craft(
        issuer=root,
        subject=zone_subject("eu"),
        ca=True,
        path_length=0,
        name_constraints=constraints,
    )

    def leaf(*names: x509.GeneralName) -> x509.Certificate:
        return craft(issuer=(ca_cert.subject, ca_key), sans=[uri(SVC), *names])[0]

    ip = ipaddress.ip_address
    check(
        [leaf(x509.DNSName("api.eu.svc.meshgate"), x509.IPAddress(ip("10.1.2.3"))), ca_cert],
        [root.certificate],
    )
    refused([leaf(x509.DNSName("api.example.com")), ca_cert], [root.certificate], "outside")
    refused([leaf(x509.DNSName("x.bad.svc.meshgate")), ca_cert], [root.certificate], "excluded")
    refused([leaf(x509.IPAddress(ip("192.168.1.1"))), ca_cert], [root.certificate], "outside")


def test_refuses_unsupported_name_constraint_types(root: CertificateAuthority) -> None:
    constraints = x509.NameConstraints(
        permitted_subtrees=[x509.RFC822Name("example.com")], excluded_subtrees=None
    )
    ca_cert, ca_key = craft(
        issuer=root,
        subject=zone_subject("eu"),
        ca=True,
        path_length=0,
        name_constraints=constraints,
    )
    leaf, _ = craft(issuer=(ca_cert.subject, ca_key), sans=[uri(SVC)])
    refused([leaf, ca_cert], [root.certificate], "unsupported name constraint")


# --- leaf rules -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sans", "count"),
    [
        ([], 0),
        ([x509.DNSName("api.example")], 0),
        ([uri(SVC), uri(f"spiffe://{TD}/svc/other")], 2),
        ([uri(SVC), uri(f"spiffe://{TD}/svc/b"), uri(f"spiffe://{TD}/svc/c")], 3),
    ],
)
def test_refuses_a_leaf_without_exactly_one_uri_san(
    root: CertificateAuthority, eu: CertificateAuthority, sans: list[x509.GeneralName], count: int
) -> None:
    leaf, _ = craft(issuer=eu, sans=sans)
    refused([leaf, eu.certificate], [root.certificate], f"exactly one URI SAN.*has {count}")


@pytest.mark.parametrize(
    "value",
    ["https://mesh.example/svc/api", f"spiffe://{TD}/svc/a/../b", f"SPIFFE://{TD}/svc/api"],
)
def test_refuses_a_uri_san_that_is_not_a_spiffe_id(
    root: CertificateAuthority, eu: CertificateAuthority, value: str
) -> None:
    leaf, _ = craft(issuer=eu, sans=[uri(value)])
    refused([leaf, eu.certificate], [root.certificate], "not a valid SPIFFE ID")


def test_refuses_another_trust_domain(root: CertificateAuthority) -> None:
    other_root = create_root_ca("other.example", mesh="default", now=NOW)
    leaf, _ = leaf_for(other_root, "spiffe://other.example/svc/api")
    check([leaf], [other_root.certificate], trust_domain="other.example")
    refused([leaf], [other_root.certificate], "expected 'mesh.example'")


@pytest.mark.parametrize(("server", "client"), [(True, False), (False, True)])
def test_refuses_a_leaf_without_the_eku_for_the_usage(
    root: CertificateAuthority, eu: CertificateAuthority, server: bool, client: bool
) -> None:
    leaf, _ = leaf_for(eu, SVC, server=server, client=client)
    ok, missing = ("server", "client") if server else ("client", "server")
    check([leaf, eu.certificate], [root.certificate], usage=ok)
    refused([leaf, eu.certificate], [root.certificate], f"{missing}Auth", usage=missing)


def test_refuses_a_leaf_without_any_eku(root: CertificateAuthority, eu: CertificateAuthority) -> None:
    leaf, _ = craft(issuer=eu, sans=[uri(SVC)], eku=None)
    refused(
        [leaf, eu.certificate],
        [root.certificate],
        "lacks extendedKeyUsage serverAuth",
        usage="server",
    )


@pytest.mark.parametrize(
    ("usage", "match"),
    [
        (None, "lacks keyUsage digitalSignature"),
        (key_usage(), "lacks keyUsage digitalSignature"),
        (key_usage(sign=True, cert_sign=True), "keyCertSign or cRLSign"),
    ],
)
def test_refuses_a_leaf_with_wrong_key_usage(
    root: CertificateAuthority, eu: CertificateAuthority, usage: x509.KeyUsage | None, match: str
) -> None:
    leaf, _ = craft(issuer=eu, sans=[uri(SVC)], usage=usage)
    refused([leaf, eu.certificate], [root.certificate], match)


def test_refuses_an_unknown_identity_shape(root: CertificateAuthority, eu: CertificateAuthority) -> None:
    leaf, _ = craft(issuer=eu, sans=[uri(f"spiffe://{TD}/workload/x")])
    refused([leaf, eu.certificate], [root.certificate], "not a meshgate identity")


# --- zone issuer rule -----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/zone/eu/cp", "/zone/eu/ingress/in-1", "/zone/eu/edge/e1"])
def test_refuses_a_zone_identity_from_another_zone(
    root: CertificateAuthority, us: CertificateAuthority, path: str
) -> None:
    leaf, _ = leaf_for(us, f"spiffe://{TD}{path}")
    refused([leaf, us.certificate], [root.certificate], "scoped to zone 'eu'.*names zone 'us'")


def test_refuses_a_zone_identity_issued_by_the_root(root: CertificateAuthority) -> None:
    leaf, _ = leaf_for(root, f"spiffe://{TD}/zone/eu/edge/e1")
    refused([leaf], [root.certificate], "issued by the root CA directly")


def test_refuses_a_zone_identity_from_an_intermediate_naming_no_zone(
    root: CertificateAuthority,
) -> None:
    plain_subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "eu")])
    plain, plain_key = craft(
        issuer=root, subject=plain_subject, ca=True, path_length=0, sans=[uri(f"spiffe://{TD}")]
    )
    leaf, _ = craft(issuer=(plain_subject, plain_key), sans=[uri(f"spiffe://{TD}/zone/eu/cp")])
    refused([leaf, plain], [root.certificate], "names no zone")


def test_refuses_a_global_cp_identity_from_a_zone(
    root: CertificateAuthority, eu: CertificateAuthority
) -> None:
    leaf, _ = leaf_for(eu, f"spiffe://{TD}/global/cp")
    refused([leaf, eu.certificate], [root.certificate], "must be issued by the root CA directly")
