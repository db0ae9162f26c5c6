"""Keep glibc's malloc giving large blocks mappings of their own (a no-op on other C libraries).

glibc serves a block of ``M_MMAP_THRESHOLD`` (128 KiB) or more that the heap cannot hold with a
mapping of its own, whose pages cost memory only once written. By default the threshold is
dynamic: freeing such a block raises it to that block's size (up to 32 MiB), and a zone CP frees
multi-megabyte snapshots, so later large blocks came from the heap, over pages written before.
uvloop gives every TLS connection a 256 KiB read buffer (``SSL_READ_MAX_SIZE``, not
configurable), of which a proxy's small messages touch little: in the heap it cost a zone
CP about 95 KiB per connected proxy at 10,000 services (``bench proxies``: 190 -> 96 KiB).
Setting the threshold fixes it at glibc's default value and turns the dynamic rise off.

The price: every transient block of 128 KiB or more is mapped and unmapped (the TLS layer's
256 KiB ``bytes`` per read of a plain protocol, for one), hence ``stream_server``.
"""

from __future__ import annotations

import ctypes
import os

M_MMAP_THRESHOLD = -3  # glibc's <malloc.h>
DEFAULT = 128 * 1024  # glibc's initial value


def is_glibc() -> bool:
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (ValueError, OSError, AttributeError):  # not a glibc name, or no confstr
        return False


def fix_mmap_threshold(size: int = DEFAULT) -> bool:
    """Serve blocks of ``size`` bytes or more with their own mappings from now on. True when
    glibc took it; False elsewhere (nothing changed)."""
    if not is_glibc():
        return False
    mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, size))
