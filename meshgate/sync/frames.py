"""Sync over a plain (TLS) stream: each message a 4-byte big-endian length, then UTF-8 JSON.

The proxies' channel to their zone CP: asyncio streams only, no web framework.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
from typing import Any

from meshgate.sync.messages import MAX_MESSAGE_BYTES, ProtocolError
from meshgate.sync.runner import Closed

_HEADER = struct.Struct(">I")
#: A large message goes to the transport in pieces of this size (under one TLS record). Over
#: TLS, a single write leaves a buffer as large as itself with the connection for as long as it
#: lives (the TLS layer's memory BIO keeps its capacity): a 1 MB snapshot part cost every
#: connected proxy about 1.2 MB of a zone CP's memory. Measured per connection after a 2.4 MB
#: snapshot (uvloop, TLS 1.3): 16 KiB pieces 48 KiB, 8 KiB 38 KiB, 4 KiB 31 KiB; sending it
#: cost 5.1, 6.0 and 7.8 ms of CPU.
WRITE_CHUNK = 4 * 1024


class StreamChannel:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, text: str) -> None:
        data = text.encode()
        frame = memoryview(_HEADER.pack(len(data)) + data)
        try:
            for start in range(0, len(frame), WRITE_CHUNK):
                self.writer.write(frame[start : start + WRITE_CHUNK])
                await self.writer.drain()
        except (ConnectionError, RuntimeError) as exc:
            raise Closed(str(exc)) from None

    async def receive(self) -> str:
        try:
            header = await self.reader.readexactly(_HEADER.size)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise Closed(f"connection ended: {exc}") from None
        (size,) = _HEADER.unpack(header)
        if size > MAX_MESSAGE_BYTES:
            raise ProtocolError(f"message of {size} bytes exceeds {MAX_MESSAGE_BYTES}")
        try:
            data = await self.reader.readexactly(size)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise Closed(f"connection ended mid-message: {exc}") from None
        try:
            return data.decode()
        except UnicodeDecodeError:
            raise ProtocolError("message is not UTF-8") from None

    async def refuse(self, reason: str) -> None:
        with contextlib.suppress(Exception):
            await self.send(json.dumps({"type": "error", "status": 400, "message": reason}))
        await self.close()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()

    async def request(self, body: dict[str, Any]) -> dict[str, Any]:
        """One JSON request, one JSON reply (enrollment, renewal, registration)."""
        await self.send(json.dumps(body))
        return loads_object(await self.receive())


def loads_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        raise ProtocolError("message is not JSON") from None
    if not isinstance(value, dict):
        raise ProtocolError("message must be a JSON object")
    return value
