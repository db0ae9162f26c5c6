"""API tokens: random bearer tokens whose SHA-256 is kept in the store.

The admin token is made on first start and written once to a 0600 file; the store only
ever holds its hash, so a store dump does not hand out write access.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path

from meshgate.files import write_secret_file

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
