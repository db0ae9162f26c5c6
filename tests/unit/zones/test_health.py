from __future__ import annotations

import asyncio

from zones.config import HealthCheck, Instance
from zones.health import HealthState, probe


def test_first_answer_decides_then_rise_and_fall_need_streaks() -> None:
    state = HealthState(rise=2, fall=3)
    assert state.observe(True)
    assert state.healthy is True
    assert not state.observe(False)
    assert not state.observe(True)  # a success breaks the failure streak
    assert [state.observe(False) for _ in range(3)] == [False, False, True]
    assert state.healthy is False
    assert [state.observe(True) for _ in range(2)] == [False, True]
    assert state.healthy is True


async def test_probes_against_real_listeners() -> None:
    async def http_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    async def http_error(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    ok = await asyncio.start_server(http_ok, "127.0.0.1", 0)
    bad = await asyncio.start_server(http_error, "127.0.0.1", 0)
    try:
        ok_port, bad_port = (s.sockets[0].getsockname()[1] for s in (ok, bad))
        http = HealthCheck(type="http", path="/healthz", timeout=2.0)
        assert await probe(Instance("127.0.0.1", ok_port), http)
        assert not await probe(Instance("127.0.0.1", bad_port), http)
        assert await probe(Instance("127.0.0.1", bad_port), HealthCheck(type="tcp", timeout=2.0))
    finally:
        for server in (ok, bad):
            server.close()
            await server.wait_closed()
    # Nothing listens there any more: refused, quickly.
    assert not await probe(Instance("127.0.0.1", ok_port), HealthCheck(type="tcp", timeout=2.0))
