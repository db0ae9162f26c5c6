"""Kinds the global CP writes for itself: CA material, signing keys, credentials.

Never served by the API. Private halves are encrypted with the key-encryption key (KEK)
and declared private, so they never leave the global CP; public halves sync to zones.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from pydantic import Field

from meshgate.resources.model import Resource, Spec
from meshgate.resources.registry import KindDescriptor, Owner, Scope, SyncDirection

Pem = str


class MeshCASpec(Spec):
    """The root CA of one mesh (named after the mesh)."""

    certificate: Pem
    # Private fields have defaults: zones receive the document without them.
    encrypted_key: str = ""  # see meshgate.pki.kek
    kek_id: str = ""
    fingerprint: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")


class SigningKeySpec(Spec):
    """A signing key of the global CP (``join-token``)."""

    algorithm: Literal["ed25519"]
    public_key: Pem
    key_id: str
    encrypted_private_key: str = ""  # private: zones receive the document without it
    kek_id: str = ""

    def verification_key(self) -> Ed25519PublicKey | None:
        key = load_pem_public_key(self.public_key.encode())
        return key if isinstance(key, Ed25519PublicKey) else None


def verification_keys(resources: Iterable[Resource]) -> dict[str, Ed25519PublicKey]:
    """Join-token verification keys by key id, from ``SigningKey`` resources."""
    keys = {}
    for resource in resources:
        spec = resource.spec_as(SigningKeySpec)
        key = spec.verification_key()
        if key is not None:
            keys[spec.key_id] = key
    return keys


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
    private_fields=("encryptedKey", "kekId"),
    dns_label_name=True,
)

SIGNING_KEY = KindDescriptor(
    kind="SigningKey",
    plural="signingkeys",
    spec_type=SigningKeySpec,
    scope=Scope.GLOBAL,
    owner=Owner.SYSTEM,
    sync=SyncDirection.GLOBAL_TO_ZONE,
    private_fields=("encryptedPrivateKey", "kekId"),
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


class UsedTokenSpec(Spec):
    """A single-use join token that has been redeemed (kept until it would have expired)."""

    role: str
    zone: str
    redeemed_at: str
    expires_at: str
    bound_to: str = ""  # at a zone CP: the one resource a single-use token may keep writing


class ZoneEnrollmentSpec(Spec):
    """The zone intermediate CA the global CP issued last: only it may speak for the zone."""

    zone: str
    fingerprint: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    certificate: Pem
    enrolled_at: str


class Nack(Spec):
    version: int
    error: str
    at: str


class ZoneSessionSpec(Spec):
    """The global CP's view of a zone's sync: written by the replica that holds its session."""

    zone: str
    connected: bool
    replica: str = ""
    since: str = ""
    applied_version: int = 0
    acked_at: str = ""
    pending_since: str = ""  # oldest change the zone has not acknowledged yet ("": none)
    last_nack: Nack | None = None


class SyncCheckpointSpec(Spec):
    """Kept by a sink in its own store, in the same transaction as the data it applied."""

    version: int
    applied_at: str


USED_TOKEN = KindDescriptor(
    kind="UsedToken",
    plural="usedtokens",
    spec_type=UsedTokenSpec,
    scope=Scope.GLOBAL,
    owner=Owner.SYSTEM,
    sync=SyncDirection.NONE,
)

ZONE_ENROLLMENT = KindDescriptor(
    kind="ZoneEnrollment",
    plural="zoneenrollments",
    spec_type=ZoneEnrollmentSpec,
    scope=Scope.GLOBAL,
    owner=Owner.SYSTEM,
    sync=SyncDirection.NONE,
    dns_label_name=True,
)

ZONE_SESSION = KindDescriptor(
    kind="ZoneSession",
    plural="zonesessions",
    spec_type=ZoneSessionSpec,
    scope=Scope.GLOBAL,
    owner=Owner.SYSTEM,
    sync=SyncDirection.NONE,
    dns_label_name=True,
)

SYNC_CHECKPOINT = KindDescriptor(
    kind="SyncCheckpoint",
    plural="synccheckpoints",
    spec_type=SyncCheckpointSpec,
    scope=Scope.GLOBAL,
    owner=Owner.SYSTEM,
    sync=SyncDirection.NONE,
)
