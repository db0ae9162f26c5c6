"""API tokens: random bearer tokens whose SHA-256 is kept in the store.

The admin token is made on first start and written once to a 0600 file; the store only
ever holds its hash, so a store dump does not hand out write access.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

TOKEN_PREFIX = "mgat_"  # noqa: S105 - a prefix, not a secret


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def matches(token: str, expected_hash: str) -> bool:
    return hmac.compare_digest(token_hash(token), expected_hash)


def token_from_file_or_new(path: Path) -> str:
    """The token in ``path`` (a store reset keeps honouring the operator's file), or a new
    one written there first."""
    if path.exists():
        return path.read_text().strip()
    token = new_token()
    write_secret_file(path, token)
    return token


def write_secret_file(path: Path, content: str) -> None:
    """Create ``path`` with mode 0600 (never readable by others, even for an instant)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(content + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
