"""An idle TLS connection's 256 KiB read buffer stops costing memory once released: its whole
pages are no longer resident (mincore), and the buffer still works."""

from __future__ import annotations

import ctypes
import mmap
import sys

import pytest

from meshgate.proxy.read_buffer import release_read_buffer

SIZE = 256 * 1024
PAGE = mmap.PAGESIZE


class FakeTlsProtocol:
    """What the loop's TLS protocol offers: ``get_buffer`` returns its whole read buffer."""

    def __init__(self) -> None:
        self.buffer = bytearray(SIZE)
        self.asked: list[int] = []

    def get_buffer(self, n: int) -> memoryview:
        self.asked.append(n)
        return memoryview(self.buffer)


def resident_pages(buffer: bytearray) -> int:
    """Whole pages of ``buffer`` in memory now."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    address = ctypes.addressof(ctypes.c_char.from_buffer(buffer))
    start = -(-address // PAGE) * PAGE
    end = (address + len(buffer)) // PAGE * PAGE
    vec = (ctypes.c_ubyte * ((end - start) // PAGE))()
    assert libc.mincore(start, end - start, vec) == 0, ctypes.get_errno()
    return sum(b & 1 for b in vec)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise(MADV_DONTNEED) on Linux only")
def test_a_released_read_buffer_keeps_no_whole_page_and_still_works() -> None:
    protocol = FakeTlsProtocol()
    protocol.buffer[:] = b"\x17" * SIZE  # every page written, as reused heap memory would be
    assert resident_pages(protocol.buffer) >= SIZE // PAGE - 1
    assert release_read_buffer(protocol)
    assert resident_pages(protocol.buffer) == 0
    assert protocol.asked == [1]  # asking for one byte: a buffer never grows for it
    assert protocol.buffer[SIZE // 2] == 0  # a released page reads back as zeros
    protocol.buffer[:5] = b"hello"  # the next read fills it again
    assert bytes(protocol.buffer[:5]) == b"hello"
    assert resident_pages(protocol.buffer) <= 2


def test_without_a_read_buffer_there_is_nothing_to_release() -> None:
    assert not release_read_buffer(object())
