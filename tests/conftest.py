"""Session-wide fixtures: one etcd server for the whole run (tests isolate by key prefix)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.etcd import EtcdServer, etcd_binary


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    etcd_binary()  # skips (fails under CI=true) when etcd is not installed
    server = EtcdServer(tmp_path_factory.mktemp("etcd-session"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
        server.dump_log()  # shown by pytest only if the test it is attached to failed
