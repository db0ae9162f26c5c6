"""The demo's resources: two regions, a web service behind one anycast address.

Each zone has a location, so the zone CP tells each edge how far every zone is: on loopback the
probed RTTs tie, and the edge then prefers the nearest zone, its own. The public certificate is
signed by a CA made for the demo (``public_tls``), which the demo writes out for ``curl --cacert``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshgate.resources.model import API_VERSION

HOSTNAME = "www.demo.meshgate.test"
VIP = "203.0.113.10"
SERVICE = "web"
SERVICE_PORT = 8080  # the Service's port (the proxies' instances are elsewhere: the workloads)
PUBLIC_PORTS = {"http": 80, "https": 443}  # the GlobalService's; edges add their portOffset
TLS_SECRET = "web-public-tls"  # noqa: S105 - the name of a Secret resource
ZONES = {"eu-west": ("Europe (Paris)", 48.86, 2.35, 65101), "us-east": ("US (Ashburn)", 39.04, -77.49, 65102)}


def edge_name(zone: str) -> str:
    return f"edge-{zone}-1"


def _doc(kind: str, name: str, spec: dict[str, Any], **labels: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": meta, "spec": spec}


def _pem_key(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def public_certificate(now: datetime) -> tuple[str, str]:
    """A self-signed certificate for the demo hostname (PEM cert, PEM key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOSTNAME)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=90))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOSTNAME)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), _pem_key(key)


@dataclass(frozen=True)
class PublicTls:
    """A CA made for the demo (what clients trust) and the hostname's chain and key it signed."""

    ca_pem: str
    chain_pem: str
    key_pem: str


def public_tls(now: datetime) -> PublicTls:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "meshgate demo CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=90))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOSTNAME)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOSTNAME)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_pem = ca.public_bytes(pem).decode()
    return PublicTls(ca_pem, leaf.public_bytes(pem).decode() + ca_pem, _pem_key(key))


def documents(now: datetime, tls: PublicTls | None = None) -> list[dict[str, Any]]:
    """Zones, the web Service, its tls Secret, the GlobalService and an Edge per region."""
    tls = tls or public_tls(now)
    docs = []
    for zone, (region, lat, lon, _asn) in ZONES.items():
        docs.append(_doc("Zone", zone, {"region": region, "location": {"latitude": lat, "longitude": lon}}))
    docs += [
        _doc(
            "Service",
            SERVICE,
            {"ports": [{"name": "http", "port": SERVICE_PORT, "protocol": "http"}]},
            app=SERVICE,
        ),
        _doc(
            "Secret",
            TLS_SECRET,
            {"type": "tls", "data": {"tls.crt": tls.chain_pem, "tls.key": tls.key_pem}, "zones": ["*"]},
        ),
        _doc(
            "GlobalService",
            SERVICE,
            {
                "service": SERVICE,
                "hostnames": [HOSTNAME],
                "vips": [VIP],
                "ports": [
                    {
                        "name": "https",
                        "port": PUBLIC_PORTS["https"],
                        "protocol": "https",
                        "targetPort": "http",
                    },
                    {"name": "http", "port": PUBLIC_PORTS["http"], "protocol": "http", "targetPort": "http"},
                ],
                "certificateRef": TLS_SECRET,
                "zones": [{"zone": zone, "priority": 0} for zone in ZONES],
            },
            app=SERVICE,
        ),
    ]
    for i, (zone, (_region, _lat, _lon, asn)) in enumerate(ZONES.items()):
        docs.append(
            _doc(
                "Edge",
                edge_name(zone),
                {
                    "zone": zone,
                    "bgp": {
                        "localASN": asn,
                        "routerID": f"10.0.{i}.1",
                        "neighbors": [{"address": f"10.0.{i}.254", "peerASN": 65000}],
                        "communities": ["65000:100"],
                    },
                },
            )
        )
    return docs
