"""The zone CP's identity: its intermediate CA (key never leaves the data dir), the mesh root
it trusts, and its own client certificate ``spiffe://<td>/zone/<zone>/cp``, minted locally
from the intermediate and renewed before it expires."""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from meshgate.files import write_secret_file
from meshgate.pki.ca import CertificateAuthority
from meshgate.pki.identities import zone_cp_id
from meshgate.pki.keys import (
    certificate_from_pem,
    certificate_to_pem,
    new_private_key,
    private_key_from_pem,
    private_key_to_pem,
)
from meshgate.pki.leaf import issue_leaf
from meshgate.pki.tls import client_context

FILES = ("root.pem", "intermediate.pem", "intermediate.key")


@dataclass
class ZoneIdentity:
    zone: str
    root: x509.Certificate
    intermediate: CertificateAuthority
    leaf: x509.Certificate
    leaf_key: ec.EllipticCurvePrivateKey

    @property
    def trust_domain(self) -> str:
        return self.intermediate.trust_domain

    @classmethod
    def create(
        cls,
        zone: str,
        root: x509.Certificate,
        intermediate: x509.Certificate,
        key: ec.EllipticCurvePrivateKey,
        *,
        now: datetime,
        ttl: timedelta,
    ) -> ZoneIdentity:
        ca = CertificateAuthority(intermediate, key, (root,))
        if ca.zone != zone:
            raise ValueError(f"the intermediate is for zone {ca.zone!r}, not {zone!r}")
        leaf, leaf_key = _mint(ca, zone, now, ttl)
        return cls(zone, root, ca, leaf, leaf_key)

    @classmethod
    def load(cls, directory: Path, zone: str, *, now: datetime, ttl: timedelta) -> ZoneIdentity | None:
        if not all((directory / name).exists() for name in FILES):
            return None
        root = certificate_from_pem((directory / "root.pem").read_bytes())
        intermediate = certificate_from_pem((directory / "intermediate.pem").read_bytes())
        key = private_key_from_pem((directory / "intermediate.key").read_bytes())
        return cls.create(zone, root, intermediate, key, now=now, ttl=ttl)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_secret_file(directory / "root.pem", certificate_to_pem(self.root).decode().strip())
        write_secret_file(
            directory / "intermediate.pem", certificate_to_pem(self.intermediate.certificate).decode().strip()
        )
        write_secret_file(
            directory / "intermediate.key", private_key_to_pem(self.intermediate.key).decode().strip()
        )
        os.sync()

    def renew_if_due(self, now: datetime, ttl: timedelta) -> bool:
        """Re-mint the client certificate once two thirds of its life are gone."""
        lifetime = self.leaf.not_valid_after_utc - self.leaf.not_valid_before_utc
        if now < self.leaf.not_valid_before_utc + lifetime * 2 / 3:
            return False
        self.leaf, self.leaf_key = _mint(self.intermediate, self.zone, now, ttl)
        return True

    def client_ssl(self) -> ssl.SSLContext:
        """For connections to the global CP: trust only the mesh root, present our leaf."""
        return client_context(
            certificate_to_pem(self.root),
            cert_chain_pem=self.intermediate.presented_chain_pem(self.leaf),
            key_pem=private_key_to_pem(self.leaf_key),
        )


def _mint(
    ca: CertificateAuthority, zone: str, now: datetime, ttl: timedelta
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = new_private_key()
    leaf = issue_leaf(
        ca,
        key.public_key(),
        spiffe_id=zone_cp_id(ca.trust_domain, zone),
        now=now,
        ttl=ttl,
        server=False,
        client=True,
    )
    return leaf, key
