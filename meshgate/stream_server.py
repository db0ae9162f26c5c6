"""``asyncio.start_server`` whose connections decrypt into one read buffer per server.

With a plain protocol, the TLS layer (uvloop's and asyncio's alike) reads each burst of
decrypted data as a new ``bytes`` of 256 KiB, shrunk once filled: a zone CP holding thousands
of proxy connections makes one per acknowledgement it receives. Served as a buffered protocol,
it decrypts into the buffer the protocol hands it instead: here one per server (the loop calls
``get_buffer`` and ``buffer_updated`` back to back, so connections never hold it), whose bytes
go to the connection's ``StreamReader`` as before. Handlers get the usual reader and writer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

READ_BUFFER = 64 * 1024
STREAM_LIMIT = 64 * 1024  # asyncio's default StreamReader limit


class _ReadInto(asyncio.BufferedProtocol):
    """A ``StreamReaderProtocol`` presented as a buffered protocol."""

    def __init__(self, streams: asyncio.StreamReaderProtocol, buffer: memoryview) -> None:
        self._streams, self._buffer = streams, buffer

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        self._streams.data_received(self._buffer[:nbytes].tobytes())

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._streams.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._streams.connection_lost(exc)

    def eof_received(self) -> bool | None:
        return self._streams.eof_received()

    def pause_writing(self) -> None:
        self._streams.pause_writing()

    def resume_writing(self) -> None:
        self._streams.resume_writing()


async def start_stream_server(handler: Handler, host: str, port: int, **kwargs: Any) -> asyncio.Server:
    """As ``asyncio.start_server(handler, host, port, **kwargs)``."""
    loop = asyncio.get_running_loop()
    buffer = memoryview(bytearray(READ_BUFFER))

    def connection() -> _ReadInto:
        reader = asyncio.StreamReader(limit=STREAM_LIMIT, loop=loop)
        return _ReadInto(asyncio.StreamReaderProtocol(reader, handler, loop=loop), buffer)

    return await loop.create_server(connection, host, port, **kwargs)
