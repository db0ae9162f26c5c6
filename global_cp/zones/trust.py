"""What the zone-facing side trusts: the default mesh's root CA, its trust domain, and the
join-token verification keys, read from the store."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from global_cp.bootstrap import DEFAULT_MESH
from global_cp.mesh_ca import load_mesh_ca
from meshgate.pki.ca import CertificateAuthority
from meshgate.pki.kek import Kek
from meshgate.resources.kinds.mesh import MeshSpec
from meshgate.resources.kinds.system import verification_keys
from meshgate.store.interface import Store


@dataclass(frozen=True)
class Trust:
    mesh: str
    trust_domain: str
    ca: CertificateAuthority
    mesh_spec: MeshSpec

    @property
    def root(self) -> x509.Certificate:
        return self.ca.certificate


async def load_trust(store: Store, kek: Kek, mesh: str = DEFAULT_MESH) -> Trust:
    spec = (await store.get("Mesh", mesh)).spec_as(MeshSpec)
    return Trust(mesh, spec.trust_domain, await load_mesh_ca(store, kek, mesh), spec)


async def token_keys(store: Store) -> dict[str, Ed25519PublicKey]:
    return verification_keys((await store.list("SigningKey")).items)
