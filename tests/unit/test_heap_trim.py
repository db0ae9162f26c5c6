"""Trimming gives back the pages of blocks freed in the middle of glibc's heap, which freeing alone
does not (a live block above them keeps the heap from shrinking). In a fresh interpreter: the
memory is measured from /proc/self/statm before and after."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from meshgate.mmap_threshold import is_glibc

PROBE = textwrap.dedent("""
    import ctypes, os
    from meshgate.heap_trim import trim_heap
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    def resident_mib():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 2**20
    blocks = [libc.malloc(64 * 1024) for _ in range(1024)]  # 64 MiB in the heap (below 128 KiB)
    for block in blocks:
        ctypes.memset(block, 1, 64 * 1024)
    pin = libc.malloc(64 * 1024)  # lives on, above them
    for block in blocks:
        libc.free(block)
    freed = resident_mib()
    trimmed = trim_heap()
    print(int(trimmed), freed - resident_mib())
""")


@pytest.mark.skipif(not is_glibc(), reason="glibc's malloc only")
def test_trimming_returns_the_pages_of_blocks_freed_under_a_live_one() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], check=True, capture_output=True, text=True).stdout
    trimmed, returned_mib = map(int, out.split())
    assert trimmed == 1
    assert returned_mib >= 48  # of the 64 MiB freed
