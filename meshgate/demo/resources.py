"""The demo's resources: two regions, a web service behind one anycast address."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from meshgate.resources.model import API_VERSION

HOSTNAME = "www.demo.meshgate.test"
VIP = "203.0.113.10"
ZONES = {"eu-west": ("Europe (Paris)", 48.86, 2.35, 65101), "us-east": ("US (Ashburn)", 39.04, -77.49, 65102)}


def _doc(kind: str, name: str, spec: dict[str, Any], **labels: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": meta, "spec": spec}


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
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


def documents(now: datetime) -> list[dict[str, Any]]:
    cert, key = public_certificate(now)
    docs = []
    for zone, (region, lat, lon, _asn) in ZONES.items():
        docs.append(_doc("Zone", zone, {"region": region, "location": {"latitude": lat, "longitude": lon}}))
    docs += [
        _doc("Service", "web", {"ports": [{"name": "http", "port": 8080, "protocol": "http"}]}, app="web"),
        _doc("Service", "db", {"ports": [{"name": "pg", "port": 5432, "protocol": "tcp"}]}, app="db"),
        _doc(
            "Secret",
            "web-public-tls",
            {"type": "tls", "data": {"tls.crt": cert, "tls.key": key}, "zones": ["*"]},
        ),
        _doc(
            "GlobalService",
            "web",
            {
                "service": "web",
                "hostnames": [HOSTNAME],
                "vips": [VIP],
                "ports": [
                    {"name": "https", "port": 443, "protocol": "https", "targetPort": "http"},
                    {"name": "http", "port": 80, "protocol": "http", "targetPort": "http"},
                ],
                "certificateRef": "web-public-tls",
                "zones": [{"zone": "eu-west", "priority": 0}, {"zone": "us-east", "priority": 0}],
            },
            app="web",
        ),
    ]
    for i, (zone, (_region, _lat, _lon, asn)) in enumerate(ZONES.items()):
        docs.append(
            _doc(
                "Edge",
                f"edge-{zone}-1",
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
