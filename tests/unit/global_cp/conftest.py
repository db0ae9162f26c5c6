from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from global_cp.config import GlobalCPConfig
from global_cp.server import GlobalCP
from tests.support.api import Api


@pytest.fixture
async def cp(tmp_path: Path) -> AsyncIterator[GlobalCP]:
    server = GlobalCP(
        GlobalCPConfig(
            data_dir=tmp_path / "cp",
            listen="127.0.0.1:0",
            zone_listen="127.0.0.1:0",
            max_body=256 * 1024,
            heartbeat=0.2,
        )
    )
    await server.start()
    await server.wait_ready()
    yield server
    await server.stop()


@pytest.fixture
async def api(cp: GlobalCP) -> AsyncIterator[Api]:
    client = Api(cp.url, cp.config.admin_token.read_text().strip())
    yield client
    await client.close()
