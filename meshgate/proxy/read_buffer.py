"""Give back the memory of a TLS connection's read buffer while it holds nothing.

The event loop's TLS protocol (uvloop's, and asyncio's) keeps a 256 KiB read buffer per
connection (``SSL_READ_MAX_SIZE``). Each read fills it from the start and is copied into the
connection's incoming ``MemoryBIO`` at once, so between reads it holds nothing. glibc serves
that block from the heap once its mmap threshold has risen (it rises when a process frees a large
block, as every proxy does at start), and a heap block reuses pages that earlier, shorter-lived
allocations touched (handshake buffers, certificates being parsed): they stay resident for the
connection's whole life. Measured on the edge's HTTPS port: about 23 KB of such pages per idle
connection (52 -> 29 KB per connection, ``python -m bench memory``).

``release_read_buffer`` tells the kernel that the buffer's whole pages hold nothing any more
(``MADV_DONTNEED``: private anonymous pages read back as zeros when touched again). The next read
touches only the pages it fills. The pages at either end, shared with malloc's bookkeeping, are
left alone. Done once a handshake is over; it costs one system call per connection.
"""

from __future__ import annotations

import ctypes
import mmap
import sys
from functools import cache
from typing import Any

MADV_DONTNEED = 4  # <sys/mman.h> on Linux


@cache
def _madvise() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    return madvise


def release_read_buffer(tls_protocol: object) -> bool:
    """Drop the whole pages of ``tls_protocol``'s read buffer (the loop's TLS protocol: what
    ``loop.start_tls`` installed on the raw transport). Call it only between reads, from the
    loop's thread. False when there was nothing to do (no such buffer, not Linux)."""
    madvise = _madvise()
    get_buffer = getattr(tls_protocol, "get_buffer", None)
    if madvise is None or get_buffer is None:
        return False
    try:
        view = memoryview(get_buffer(1))  # the whole buffer: asking for 1 byte never grows it
        if view.readonly or not view.c_contiguous:
            return False
        size = view.nbytes
        address = ctypes.addressof(ctypes.c_char.from_buffer(view))
    except (TypeError, ValueError, RuntimeError):
        return False
    page = mmap.PAGESIZE
    start = -(-address // page) * page
    end = (address + size) // page * page
    if end <= start:
        return False
    return bool(madvise(start, end - start, MADV_DONTNEED) == 0)
