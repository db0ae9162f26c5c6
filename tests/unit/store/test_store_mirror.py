"""The store mirror: what waits on it (``caught_up``) is woken by each change it sees."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshgate.resources.kinds.mesh import MeshSpec
from meshgate.resources.model import Resource
from meshgate.store.mirror import StoreMirror
from meshgate.store.sqlite import SqliteStore


# A mirror that loaded an empty store used to leave its wake-up event set: caught_up then
# looped without ever yielding, so the watch it waited for never ran (the first write through
# the global CP's service hung at 100 % CPU). The timeout mark turns such a hang into a failure.
@pytest.mark.timeout(20)
async def test_caught_up_on_a_store_that_was_empty_waits_for_the_write(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "store.db")
    mirror = StoreMirror(store)
    await mirror.start()
    try:
        assert mirror.resources == {}
        assert await mirror.caught_up(mirror.revision + 1, timeout=0.2) is False  # nothing came
        written = await store.put(Resource("Mesh", "default", MeshSpec(trust_domain="meshgate.local")))
        revision = written.resource.revision or 0
        assert await mirror.caught_up(revision, timeout=10)
        assert ("Mesh", "default") in mirror.resources
    finally:
        await mirror.stop()
        await store.close()
