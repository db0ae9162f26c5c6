"""Writing files that must never be seen half-written or by the wrong user."""

from __future__ import annotations

import os
from pathlib import Path


def write_secret_file(path: Path, content: str) -> None:
    """Replace ``path`` atomically with ``content``, mode 0600 from the first byte, on disk
    (fsync) before this returns."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(content + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
