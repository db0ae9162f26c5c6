from __future__ import annotations

import pytest

from meshgate.pki.ca import CertificateAuthority, create_root_ca
from tests.unit.pki.pki_certs import NOW, TD, zone_authority


@pytest.fixture
def root() -> CertificateAuthority:
    return create_root_ca(TD, mesh="default", now=NOW)


@pytest.fixture
def eu(root: CertificateAuthority) -> CertificateAuthority:
    return zone_authority(root, "eu")


@pytest.fixture
def us(root: CertificateAuthority) -> CertificateAuthority:
    return zone_authority(root, "us")
