"""One root CA per mesh, made when the mesh appears, removed when it goes.

The private key is stored encrypted with the KEK (``MeshCA.encryptedKey``) and declared
private: the API never serves it and sync never sends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from meshgate.clock import Clock
from meshgate.lifecycle import OwnedTask
from meshgate.pki.ca import CertificateAuthority, create_root_ca
from meshgate.pki.kek import Kek
from meshgate.pki.keys import (
    certificate_from_pem,
    certificate_to_pem,
    fingerprint,
    private_key_from_pem,
    private_key_to_pem,
)
from meshgate.resources.kinds.mesh import MeshSpec
from meshgate.resources.kinds.system import MeshCASpec
from meshgate.resources.model import Resource
from meshgate.store.errors import AlreadyExists, NotFound, StoreError
from meshgate.store.interface import Store

log = logging.getLogger(__name__)

CA_KEY_PURPOSE = "mesh-root-ca-key"


async def ensure_mesh_cas(store: Store, kek: Kek, clock: Clock, *, root_ttl: timedelta) -> int:
    """Create missing CAs and remove orphaned ones; returns the listing revision used."""
    meshes = await store.list("Mesh")
    cas = {r.name: r for r in (await store.list("MeshCA")).items}
    for mesh in meshes.items:
        trust_domain = mesh.spec_as(MeshSpec).trust_domain
        if mesh.name in cas:
            continue
        ca = create_root_ca(trust_domain, mesh=mesh.name, now=clock.now(), ttl=root_ttl)
        spec = MeshCASpec(
            certificate=certificate_to_pem(ca.certificate).decode(),
            encrypted_key=kek.encrypt(private_key_to_pem(ca.key), CA_KEY_PURPOSE),
            kek_id=kek.id,
            fingerprint=fingerprint(ca.certificate),
        )
        with contextlib.suppress(AlreadyExists):  # another replica was quicker
            await store.create(Resource("MeshCA", mesh.name, spec))
            log.info("created mesh root CA", extra={"mesh": mesh.name, "fingerprint": spec.fingerprint})
    names = {m.name for m in meshes.items}
    for orphan in set(cas) - names:
        with contextlib.suppress(NotFound):
            await store.delete("MeshCA", orphan, revision=cas[orphan].revision)
            log.info("removed root CA of deleted mesh", extra={"mesh": orphan})
    return meshes.revision


async def load_mesh_ca(store: Store, kek: Kek, mesh: str) -> CertificateAuthority:
    spec = (await store.get("MeshCA", mesh)).spec_as(MeshCASpec)
    key = private_key_from_pem(kek.decrypt(spec.encrypted_key, CA_KEY_PURPOSE))
    return CertificateAuthority(certificate_from_pem(spec.certificate.encode()), key)


class MeshCAReconciler:
    """Keeps ``ensure_mesh_cas`` true while the global CP runs, driven by Mesh changes."""

    def __init__(self, store: Store, kek: Kek, clock: Clock, *, root_ttl: timedelta) -> None:
        self._store, self._kek, self._clock, self._root_ttl = store, kek, clock, root_ttl
        self._task = OwnedTask("mesh-ca-reconciler")

    async def start(self) -> None:
        self._task.start(self._run())

    async def stop(self) -> None:
        await self._task.stop()

    async def _run(self) -> None:
        backoff = 0.2
        while True:
            try:
                revision = await ensure_mesh_cas(self._store, self._kek, self._clock, root_ttl=self._root_ttl)
                async for _event in self._store.watch(from_revision=revision, kinds={"Mesh"}):
                    await ensure_mesh_cas(self._store, self._kek, self._clock, root_ttl=self._root_ttl)
                    backoff = 0.2
            except StoreError as exc:  # unavailable, compacted: start over
                log.warning("mesh CA reconciler: %s; retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
