"""The etcd store over mutual TLS, against a real etcd started with ``--client-cert-auth``."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshgate.store.errors import Unavailable
from meshgate.store.etcd import EtcdStore
from tests.support.etcd import EtcdServer, EtcdTls, etcd_binary
from tests.support.factories import zone

pytestmark = pytest.mark.etcd


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(
    directory: Path, stem: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate
) -> tuple[Path, Path]:
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def make_tls(directory: Path, ca_name: str = "etcd test CA") -> EtcdTls:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name(ca_name))
        .issuer_name(_name(ca_name))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, _ = _write(directory, "ca", ca_key, ca)
    paths: dict[str, tuple[Path, Path]] = {}
    for stem, sans in (
        ("server", [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
        ("client", [x509.DNSName("meshgate-client")]),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(stem))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        paths[stem] = _write(directory, stem, key, cert)
    return EtcdTls(ca_path, *paths["server"], *paths["client"])


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[EtcdServer]:
    etcd_binary()
    server = EtcdServer(tmp_path / "etcd", tls=make_tls(tmp_path / "pki")).start()
    try:
        yield server
    finally:
        server.stop()
        server.dump_log()  # pytest shows it only when the test failed


async def test_mutual_tls_round_trip(tls_server: EtcdServer) -> None:
    tls = tls_server.tls
    assert tls is not None
    prefix = f"/tls-{uuid.uuid4().hex[:8]}"
    port = tls_server.client_port

    async def open_store(endpoint: str) -> EtcdStore:
        return await EtcdStore.open(
            [endpoint],
            prefix=prefix,
            ca_cert=tls.ca.read_bytes(),
            cert_chain=tls.client_cert.read_bytes(),
            cert_key=tls.client_key.read_bytes(),
        )

    # By IP (checked against the IP SAN) and by name (resolved here, checked as "localhost").
    by_ip = await open_store(f"127.0.0.1:{port}")
    by_name = await open_store(f"localhost:{port}")
    try:
        events = by_name.watch(from_revision=await by_name.revision())
        created = await by_ip.create(zone("secure"))
        assert await by_name.get("Zone", "secure") == created
        assert (await asyncio.wait_for(anext(events), 10)).resource == created
        await events.aclose()  # type: ignore[attr-defined]
    finally:
        await by_ip.close()
        await by_name.close()


async def test_without_a_client_certificate_etcd_is_unavailable(tls_server: EtcdServer) -> None:
    tls = tls_server.tls
    assert tls is not None
    with pytest.raises(Unavailable) as info:
        await EtcdStore.open(tls_server.endpoints, ca_cert=tls.ca.read_bytes(), timeout=1.5)
    print(info.value)


async def test_a_server_signed_by_another_ca_is_refused(tls_server: EtcdServer, tmp_path: Path) -> None:
    tls = tls_server.tls
    assert tls is not None
    other = make_tls(tmp_path / "other-pki", ca_name="another CA")
    with pytest.raises(Unavailable):
        await EtcdStore.open(
            tls_server.endpoints,
            ca_cert=other.ca.read_bytes(),
            cert_chain=tls.client_cert.read_bytes(),
            cert_key=tls.client_key.read_bytes(),
            timeout=1.5,
        )


async def test_several_tls_hosts_need_a_server_name() -> None:
    with pytest.raises(ValueError, match="tls_server_name"):
        await EtcdStore.open(["127.0.0.1:2379", "127.0.0.2:2379"], ca_cert=b"unused")
