"""What every idle connection keeps (``python -m bench memory`` measures the whole): the
per-connection objects have no instance dict (an HTTP protocol with more than 30 attributes gets
a dict of its own, about 1.5 KB per connection), and a TLS connection keeps no Task of its
finished handshake."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from meshgate.pki.tls import server_context
from meshgate.proxy.http.server import HttpServer
from meshgate.proxy.listener import Listener
from tests.unit.edge.public_certs import self_signed


@pytest.mark.parametrize("cls", [HttpServer])
def test_a_connection_object_has_no_instance_dict(cls: type) -> None:
    assert cls.__dictoffset__ == 0, f"{cls.__name__} instances carry a __dict__"


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def test_an_established_tls_connection_keeps_no_handshake_task() -> None:
    cert = self_signed("www.example.com")
    listener = Listener("public", lambda _peer: Echo(), tls=server_context(cert.chain_pem, cert.key_pem))
    await listener.start("127.0.0.1", 0)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname, client.verify_mode = False, ssl.CERT_NONE
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port, ssl=client)
    try:
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
        assert listener.open_connections == 1
        assert [c.task for c in listener._connections] == [None]
    finally:
        writer.close()
        await writer.wait_closed()
        listener.close()
        assert await listener.wait_drained(1.0) == 0
