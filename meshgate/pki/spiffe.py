"""SPIFFE IDs, parsed strictly per the SPIFFE ID specification.

``spiffe://<trust domain><path>``: lowercase scheme ``spiffe``; a trust domain of ``[a-z0-9._-]``
(no port, no userinfo); a path of ``/``-separated segments of ``[A-Za-z0-9._-]`` that are never
empty, ``.`` or ``..``; no query, no fragment, no percent-encoding; at most 2048 bytes. An empty
path is allowed: ``spiffe://example.org`` names the trust domain itself (CA certificates carry it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SCHEME_PREFIX = "spiffe://"
MAX_ID_LENGTH = 2048
MAX_TRUST_DOMAIN_LENGTH = 255

_TRUST_DOMAIN_CHARS = re.compile(r"[a-z0-9._-]+")
_SEGMENT_CHARS = re.compile(r"[A-Za-z0-9._-]+")


def validate_trust_domain(trust_domain: str) -> str:
    """Return ``trust_domain`` unchanged if it is a valid SPIFFE trust domain name."""
    if not isinstance(trust_domain, str):
        raise ValueError(f"trust domain must be a string, got {type(trust_domain).__name__}")
    if not trust_domain:
        raise ValueError("trust domain is empty")
    if len(trust_domain) > MAX_TRUST_DOMAIN_LENGTH:
        raise ValueError(
            f"trust domain is {len(trust_domain)} characters, the limit is {MAX_TRUST_DOMAIN_LENGTH}"
        )
    if ":" in trust_domain:
        raise ValueError(f"trust domain {trust_domain!r} has a port; ports are not allowed")
    if "@" in trust_domain:
        raise ValueError(f"trust domain {trust_domain!r} has userinfo; it is not allowed")
    if _TRUST_DOMAIN_CHARS.fullmatch(trust_domain) is None:
        raise ValueError(
            f"trust domain {trust_domain!r} may only contain lowercase letters, digits, '.', '-' and '_'"
        )
    return trust_domain


def _validate_path(path: str) -> str:
    if path == "":
        return path
    if not path.startswith("/"):
        raise ValueError(f"path {path!r} must be empty or start with '/'")
    for segment in path[1:].split("/"):
        if segment == "":
            raise ValueError(f"path {path!r} has an empty segment (a '//' or a trailing '/')")
        if segment in (".", ".."):
            raise ValueError(f"path {path!r} has a {segment!r} segment; it is not allowed")
        if _SEGMENT_CHARS.fullmatch(segment) is None:
            raise ValueError(f"path segment {segment!r} may only contain letters, digits, '.', '-' and '_'")
    return path


@dataclass(frozen=True, slots=True)
class SpiffeId:
    """A SPIFFE ID. ``path`` is ``""`` or starts with ``/`` (``/svc/api``)."""

    trust_domain: str
    path: str = ""

    def __post_init__(self) -> None:
        validate_trust_domain(self.trust_domain)
        _validate_path(self.path)
        if len(str(self).encode()) > MAX_ID_LENGTH:
            raise ValueError(f"SPIFFE ID is longer than {MAX_ID_LENGTH} bytes")

    @classmethod
    def parse(cls, text: str) -> SpiffeId:
        """Parse ``text`` strictly; ValueError says what is wrong with it."""
        if not isinstance(text, str):
            raise ValueError(f"SPIFFE ID must be a string, got {type(text).__name__}")
        if not text:
            raise ValueError("SPIFFE ID is empty")
        if len(text.encode()) > MAX_ID_LENGTH:
            raise ValueError(f"SPIFFE ID is {len(text.encode())} bytes, the limit is {MAX_ID_LENGTH}")
        if not text.startswith(SCHEME_PREFIX):
            if text[: len(SCHEME_PREFIX)].lower() == SCHEME_PREFIX:
                raise ValueError(f"{text!r}: the scheme must be lowercase 'spiffe://'")
            raise ValueError(f"{text!r} is not a SPIFFE ID: it must start with 'spiffe://'")
        if "?" in text:
            raise ValueError(f"{text!r}: a SPIFFE ID has no query part")
        if "#" in text:
            raise ValueError(f"{text!r}: a SPIFFE ID has no fragment")
        rest = text[len(SCHEME_PREFIX) :]
        trust_domain, slash, path = rest.partition("/")
        if not trust_domain:
            raise ValueError(f"{text!r}: the trust domain is missing")
        try:
            return cls(trust_domain, slash + path)
        except ValueError as exc:
            raise ValueError(f"{text!r}: {exc}") from None

    @property
    def segments(self) -> tuple[str, ...]:
        """The path segments: ``('svc', 'api')`` for ``spiffe://td/svc/api``."""
        return tuple(self.path[1:].split("/")) if self.path else ()

    def __str__(self) -> str:
        return f"{SCHEME_PREFIX}{self.trust_domain}{self.path}"
