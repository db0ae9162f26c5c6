"""Header rules shared by both directions: hop-by-hop fields, Host syntax, request ids."""

from __future__ import annotations

import itertools
import os
import re
from typing import Final

#: removed from every forwarded message (RFC 9110 7.6.1), along with every field ``Connection``
#: names; ``transfer-encoding`` is re-applied by the proxy when it frames a body as chunked
HOP_BY_HOP: Final = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"proxy-authenticate", b"proxy-authorization",
    b"te", b"trailer", b"transfer-encoding", b"upgrade",
})  # fmt: skip

#: response fields the proxy looks at rather than forwards as they came: the hop-by-hop ones
#: and the framing
RESPONSE_SPECIAL: Final = HOP_BY_HOP | {b"content-length"}

CLIENT_IDENTITY: Final = b"x-meshgate-client-identity"
REQUEST_ID: Final = b"x-request-id"
FORWARDED: Final = b"forwarded"
X_FORWARDED_FOR: Final = b"x-forwarded-for"
X_FORWARDED_PROTO: Final = b"x-forwarded-proto"

#: Host: uri-host [":" port] (RFC 3986): an IP literal, or reg-name characters
_HOST: Final = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]*)(?::[0-9]{0,5})?")
#: request ids we keep when a caller sends one: visible token characters, bounded length
_REQUEST_ID: Final = re.compile(rb"[A-Za-z0-9._:+/=-]{1,128}")

#: methods counted under their own name in metrics (others are "OTHER")
KNOWN_METHODS: Final = {
    m: m.decode() for m in (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS")
}
#: methods whose request may be sent again when a reused connection failed before any answer
IDEMPOTENT: Final = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})


def valid_host(value: bytes) -> bool:
    return _HOST.fullmatch(value) is not None


def valid_request_id(value: bytes) -> bool:
    return _REQUEST_ID.fullmatch(value) is not None


def connection_tokens(value: bytes) -> list[bytes]:
    """The lowercased field names a ``Connection`` header lists."""
    return [t.strip().lower() for t in value.split(b",") if t.strip()]


class RequestIds:
    """Unique, cheap request ids: a random per-process prefix and a counter."""

    def __init__(self) -> None:
        self._prefix = os.urandom(6).hex().encode()
        self._counter = itertools.count(1)

    def next(self) -> bytes:
        return b"%s-%x" % (self._prefix, next(self._counter))


def forwarded_for(address: str) -> str:
    """An address as a ``Forwarded`` node (RFC 7239: IPv6 in brackets and quoted)."""
    return f'"[{address}]"' if ":" in address else address
