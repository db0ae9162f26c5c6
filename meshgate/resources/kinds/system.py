"""Kinds the global CP writes for itself: CA material, signing keys, credentials.

Never served by the API. Private halves are encrypted with the key-encryption key (KEK)
and declared private, so they never leave the global CP; public halves sync to zones.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from meshgate.resources.model import Spec
from meshgate.resources.registry import KindDescriptor, Owner, Scope, SyncDirection

Pem = str


class MeshCASpec(Spec):
    """The root CA of one mesh (named after the mesh)."""

    certificate: Pem
    encrypted_key: str  # base64, see meshgate.pki.kek
    kek_id: str
    fingerprint: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")


class SigningKeySpec(Spec):
    """A signing key of the global CP (``join-token``)."""

    algorithm: Literal["ed25519"]
    public_key: Pem
    encrypted_private_key: str
    kek_id: str
    key_id: str


class AdminCredentialSpec(Spec):
    """Hash of an API token; the token itself is only ever written to the operator's file."""

    token_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    role: Literal["admin"] = "admin"
    created_by: str = ""


class WriteFenceSpec(Spec):
    """Bumped by every operator write: replicas validating against stale state lose the race."""

    serial: int = Field(ge=0)


MESH_CA = KindDescriptor(
    kind="MeshCA",
    plural="meshcas",
    spec_type=MeshCASpec,
    scope=Scope.GLOBAL,
    owner=Owner.SYSTEM,
    sync=SyncDirection.GLOBAL_TO_ZONE,
    private_fields=("encryptedKey",),
    dns_label_name=True,
)

SIGNING_KEY = KindDescriptor(
    kind="SigningKey",
    plural="signingkeys",
    spec_type=SigningKeySpec,
    scope=Scope.GLOBAL,
    owner=Owner.SYSTEM,
    sync=SyncDirection.GLOBAL_TO_ZONE,
    private_fields=("encryptedPrivateKey",),
)

ADMIN_CREDENTIAL = KindDescriptor(
    kind="AdminCredential",
    plural="admincredentials",
    spec_type=AdminCredentialSpec,
    scope=Scope.GLOBAL,
    owner=Owner.SYSTEM,
    sync=SyncDirection.NONE,
)

WRITE_FENCE = KindDescriptor(
    kind="WriteFence",
    plural="writefences",
    spec_type=WriteFenceSpec,
    scope=Scope.GLOBAL,
    owner=Owner.SYSTEM,
    sync=SyncDirection.NONE,
)
