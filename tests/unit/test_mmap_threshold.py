"""A fixed mmap threshold keeps a 256 KiB block (uvloop's TLS read buffer) in a mapping of its own
after a larger block was freed, which would otherwise raise glibc's threshold. Checked in a
fresh interpreter (the setting is process-wide) by the chunk's IS_MMAPPED bit."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from meshgate.mmap_threshold import is_glibc

PROBE = textwrap.dedent("""
    import ctypes, sys
    from meshgate.mmap_threshold import fix_mmap_threshold
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    fixed = sys.argv[1] == "fix" and fix_mmap_threshold()
    libc.free(libc.malloc(4 << 20))  # a snapshot's worth, freed: the dynamic threshold rises
    block = libc.malloc(256 * 1024)
    mapped = ctypes.c_size_t.from_address(block - ctypes.sizeof(ctypes.c_size_t)).value & 2
    print(int(bool(fixed)), int(bool(mapped)))
""")


def probe(mode: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", PROBE, mode], check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.mark.skipif(not is_glibc(), reason="glibc's malloc only")
def test_a_large_block_keeps_its_own_mapping_once_the_threshold_is_fixed() -> None:
    assert probe("leave") == "0 0"  # glibc's dynamic threshold: the block comes from the heap
    assert probe("fix") == "1 1"
