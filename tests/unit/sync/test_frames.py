"""The length-prefixed stream channel: a large message reaches the transport in pieces no larger
than one TLS record (a single large write would stay allocated with the connection), and the
reader gets it back whole."""

from __future__ import annotations

import asyncio
from typing import cast

from meshgate.sync.frames import WRITE_CHUNK, StreamChannel


class RecordingWriter:
    """What StreamChannel.send uses of a StreamWriter: write and drain."""

    def __init__(self) -> None:
        self.pieces: list[bytes] = []
        self.drains = 0

    def write(self, data: bytes | memoryview) -> None:
        self.pieces.append(bytes(data))

    async def drain(self) -> None:
        self.drains += 1


def channel_with(writer: RecordingWriter, reader: asyncio.StreamReader | None = None) -> StreamChannel:
    return StreamChannel(reader or asyncio.StreamReader(), cast(asyncio.StreamWriter, writer))


async def test_a_small_message_is_one_write() -> None:
    writer = RecordingWriter()
    await channel_with(writer).send('{"type":"ack"}')
    assert writer.pieces == [b'\x00\x00\x00\x0e{"type":"ack"}']
    assert writer.drains == 1


async def test_a_large_message_goes_in_pieces_of_at_most_one_record() -> None:
    writer = RecordingWriter()
    text = "é" + "x" * (3 * WRITE_CHUNK)  # not ASCII: the prefix counts bytes, not characters
    await channel_with(writer).send(text)
    assert all(len(piece) <= WRITE_CHUNK for piece in writer.pieces)
    assert len(writer.pieces) == 4
    assert writer.drains == len(writer.pieces)
    data = text.encode()
    assert b"".join(writer.pieces) == len(data).to_bytes(4, "big") + data


async def test_the_reader_gets_the_pieces_back_as_one_message() -> None:
    writer = RecordingWriter()
    text = "y" * (2 * WRITE_CHUNK + 5)
    await channel_with(writer).send(text)
    reader = asyncio.StreamReader()
    for piece in writer.pieces:
        reader.feed_data(piece)
    assert await channel_with(RecordingWriter(), reader).receive() == text
