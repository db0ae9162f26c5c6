"""The stream server behind the zone CP's proxy listener, over real TLS on loopback (port 0), on
asyncio's loop and on uvloop: the TLS layer decrypts into the server's one buffer (its protocol
is a buffered one, with no ``data_received`` to fall back on), and connections sharing that
buffer each get their own bytes back, messages larger than the buffer included."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
import uvloop

from meshgate.stream_server import READ_BUFFER, start_stream_server
from tests.unit.edge.public_certs import self_signed

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def server_context(tmp_path: Path) -> ssl.SSLContext:
    cert = self_signed("localhost")
    (tmp_path / "cert.pem").write_bytes(cert.chain_pem)
    (tmp_path / "key.pem").write_bytes(cert.key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    return context


def client_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # self-signed: what is checked is the bytes
    return context


PROTOCOLS: list[asyncio.BaseProtocol] = []  # what each connection was served by


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echo length-prefixed messages; an empty one ends: answer how many there were, close."""
    PROTOCOLS.append(writer.transport.get_protocol())
    count = 0
    while size := int.from_bytes(await reader.readexactly(4)):
        writer.write(size.to_bytes(4) + await reader.readexactly(size))
        await writer.drain()
        count += 1
    writer.write(b"done %d" % count)
    await writer.drain()
    writer.close()


async def talk(port: int, payloads: list[bytes]) -> tuple[list[bytes], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_context())
    echoed = []
    for payload in payloads:
        writer.write(len(payload).to_bytes(4) + payload)
        await writer.drain()
        size = int.from_bytes(await reader.readexactly(4))
        echoed.append(await reader.readexactly(size))
    writer.write(bytes(4))
    last = await reader.read()
    writer.close()
    return echoed, last


@pytest.mark.timeout(60)
@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_connections_sharing_the_read_buffer_each_get_their_own_bytes(loop: str, tmp_path: Path) -> None:
    large = bytes(range(256)) * (3 * READ_BUFFER // 256 + 7)  # several buffers' worth

    async def scenario() -> None:
        PROTOCOLS.clear()
        server = await start_stream_server(echo, "127.0.0.1", 0, ssl=server_context(tmp_path))
        port = server.sockets[0].getsockname()[1]
        try:
            async with asyncio.timeout(30):
                results = await asyncio.gather(*(
                    talk(port, [b"ack %d" % n, large[n:], b"x" * n]) for n in range(1, 6)
                ))  # fmt: skip
        finally:
            server.close()
        assert len(PROTOCOLS) == 5
        assert all(isinstance(p, asyncio.BufferedProtocol) for p in PROTOCOLS)
        for n, (echoed, last) in enumerate(results, start=1):
            assert echoed == [b"ack %d" % n, large[n:], b"x" * n]
            assert last == b"done 3"

    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        runner.run(scenario())
