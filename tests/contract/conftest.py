"""Every store backend runs the same contract suite.

``backend`` yields a factory: each call opens a new client on the same backing store
(the same SQLite file, or the same etcd key prefix), so tests can reopen and share.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from meshgate.store.interface import Limits, Store
from meshgate.store.sqlite import SqliteStore

OpenStore = Callable[..., Awaitable[Store]]


@pytest.fixture(params=["sqlite", pytest.param("etcd", marks=pytest.mark.etcd)])
async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OpenStore]:
    opened: list[Store] = []

    if request.param == "sqlite":
        path = tmp_path / "store.db"

        async def open_sqlite(limits: Limits | None = None) -> Store:
            kwargs = {"limits": limits} if limits else {}
            store = await SqliteStore.open(path, **kwargs)
            opened.append(store)
            return store

        yield open_sqlite
    else:
        from meshgate.store.etcd import EtcdStore

        server = request.getfixturevalue("etcd_server")
        prefix = f"/contract-{uuid.uuid4().hex[:12]}"

        async def open_etcd(limits: Limits | None = None) -> Store:
            kwargs = {"limits": limits} if limits else {}
            store = await EtcdStore.open(server.endpoints, prefix=prefix, **kwargs)
            opened.append(store)
            return store

        yield open_etcd
    for store in opened:
        await store.close()


@pytest.fixture
async def store(open_store: OpenStore) -> Store:
    return await open_store()
