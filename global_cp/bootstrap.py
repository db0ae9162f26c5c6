"""First start, and every start after: what the global CP needs in its store.

Every step is create-if-absent with a compare-and-swap, so replicas starting together
against one etcd end with one default mesh, one token key and one admin credential.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)

from global_cp import auth
from global_cp.mesh_ca import ensure_mesh_cas
from meshgate.clock import Clock
from meshgate.pki import join_tokens
from meshgate.pki.kek import Kek
from meshgate.resources.kinds.mesh import MeshSpec
from meshgate.resources.kinds.system import AdminCredentialSpec, SigningKeySpec
from meshgate.resources.model import Resource
from meshgate.store.errors import AlreadyExists, NotFound
from meshgate.store.interface import Store

log = logging.getLogger(__name__)

DEFAULT_MESH = "default"
TOKEN_KEY_NAME = "join-token"  # noqa: S105 - a resource name
ADMIN_NAME = "admin"
TOKEN_KEY_PURPOSE = "join-token-signing-key"  # noqa: S105 - a label


@dataclass(frozen=True)
class Bootstrapped:
    token_key: Ed25519PrivateKey
    token_key_id: str
    admin_hashes: frozenset[str]
    admin_token_written: Path | None  # set only on the start that created it


async def bootstrap(
    store: Store,
    kek: Kek,
    clock: Clock,
    *,
    admin_token_file: Path,
    trust_domain: str,
    root_ttl: timedelta,
) -> Bootstrapped:
    await _ensure_default_mesh(store, trust_domain)
    await ensure_mesh_cas(store, kek, clock, root_ttl=root_ttl)
    token_key, key_id = await _ensure_token_key(store, kek)
    written = await _ensure_admin(store, admin_token_file)
    hashes = frozenset(
        r.spec_as(AdminCredentialSpec).token_sha256 for r in (await store.list("AdminCredential")).items
    )
    return Bootstrapped(token_key, key_id, hashes, written)


async def _ensure_default_mesh(store: Store, trust_domain: str) -> None:
    if (await store.list("Mesh")).items:
        return
    try:
        await store.create(Resource("Mesh", DEFAULT_MESH, MeshSpec(trust_domain=trust_domain)))
        log.info("created mesh", extra={"mesh": DEFAULT_MESH, "trust_domain": trust_domain})
    except AlreadyExists:
        pass


async def _ensure_token_key(store: Store, kek: Kek) -> tuple[Ed25519PrivateKey, str]:
    try:
        stored = await store.get("SigningKey", TOKEN_KEY_NAME)
    except NotFound:
        key = join_tokens.new_signing_key()
        pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        spec = SigningKeySpec(
            algorithm="ed25519",
            public_key=key.public_key()
            .public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
            .decode(),
            encrypted_private_key=kek.encrypt(pem, TOKEN_KEY_PURPOSE),
            kek_id=kek.id,
            key_id=join_tokens.key_id(key.public_key()),
        )
        try:
            stored = await store.create(Resource("SigningKey", TOKEN_KEY_NAME, spec))
        except AlreadyExists:
            stored = await store.get("SigningKey", TOKEN_KEY_NAME)
    spec = stored.spec_as(SigningKeySpec)
    private = load_pem_private_key(kek.decrypt(spec.encrypted_private_key, TOKEN_KEY_PURPOSE), password=None)
    if not isinstance(private, Ed25519PrivateKey):
        raise TypeError("stored join-token key is not Ed25519")
    return private, spec.key_id


async def _ensure_admin(store: Store, token_file: Path) -> Path | None:
    """Make the admin token once. The file is written before the credential is stored,
    so a crash between the two can never leave a credential nobody holds."""
    if (await store.list("AdminCredential")).items:
        return None
    token = await asyncio.to_thread(auth.token_from_file_or_new, token_file)
    spec = AdminCredentialSpec(token_sha256=auth.token_hash(token))
    try:
        await store.create(Resource("AdminCredential", ADMIN_NAME, spec))
    except AlreadyExists:
        # Another replica made its own first: ours is worthless, do not leave it lying around.
        winner = (await store.get("AdminCredential", ADMIN_NAME)).spec_as(AdminCredentialSpec)
        if auth.token_hash(token) != winner.token_sha256:
            await asyncio.to_thread(token_file.unlink, missing_ok=True)
        return None
    return token_file
