"""The TLS ClientHello, read from the start of a TCP stream without terminating TLS.

The zone ingress routes TLS connections by SNI: it reads what the client has sent so far, calls
:func:`parse` until it gets a :class:`ClientHello` (or :class:`Malformed`), picks a cluster with
:func:`sni_for_service`, and forwards every byte it buffered upstream unchanged. No I/O, stdlib only:
the lean proxy process imports this.

Rules (anything else is :class:`Malformed`, never another exception):

- Records: type 22 (handshake) only, record version 0x0301..0x0304, fragment 1..2^14 bytes. The
  ClientHello may span records (reassembled); the record that completes it must end with it.
- The stream up to the end of that record is at most :data:`MAX_CLIENT_HELLO` bytes, record
  headers included: the caller never has to buffer more. Claims past it fail as soon as they are seen.
- Body: handshake type 1; legacy_version 0x0301..0x0304; random; session_id <= 32 bytes; cipher
  suites of even length >= 2; >= 1 compression method; then either nothing (a TLS 1.0-1.2 hello
  may omit extensions) or an extensions block that ends exactly where the message ends. Every
  length must fit inside its container; no extension type may appear twice (RFC 8446 4.2).
- server_name (RFC 6066): a list of exactly one entry, of type host_name, filling the extension.
  The name is 1..253 bytes of ASCII letters, digits, ``-``, ``_`` and ``.`` separating non-empty
  labels of at most 63 bytes; it is returned lowercased. Decisions: a trailing dot is refused
  (RFC 6066 says HostName has none; accepting it would give one name two spellings); IDNA names
  must come as A-labels (``xn--...``), which pass through undecoded, raw UTF-8 is refused; IPv4
  literals pass here (they are LDH names) and are refused by :func:`sni_for_service`, IPv6
  literals contain ``:`` and are refused here.
- ALPN (RFC 7301): a non-empty list filling the extension, of names of 1..255 bytes. Names are
  opaque bytes (RFC 8701 GREASE ids such as ``0x0A0A`` are not printable), so they are decoded as
  Latin-1, a lossless one-to-one mapping: compare them (``"h2"``, ``"http/1.1"``), never log them raw.
- Other extensions are checked for framing only. With Encrypted ClientHello, the name is the
  outer (public) one, which is what a router that does not terminate TLS can see.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_CLIENT_HELLO = 64 * 1024
"""Most bytes of stream (record headers included) that a ClientHello may need."""

_RECORD_HEADER = 5
_MAX_FRAGMENT = 1 << 14  # RFC 8446 5.1 / RFC 5246 6.2.1
_HANDSHAKE = 22
_CLIENT_HELLO = 1
_EXT_SERVER_NAME = 0
_EXT_ALPN = 16
_HOST_NAME = 0
_HOST_NAME_BYTES = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_."


class Malformed(Exception):
    """Not the start of a stream that carries a valid TLS ClientHello (within our limits)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class NeedMore:
    """A valid prefix: read more, until ``len(data) >= total_needed`` at least.

    ``total_needed`` is a lower bound (exact when the rest comes in the records announced so far),
    always more than ``len(data)`` and never more than :data:`MAX_CLIENT_HELLO`.
    """

    total_needed: int


@dataclass(frozen=True, slots=True)
class ClientHello:
    server_name: str | None
    """Lowercased host_name of the server_name extension; None without that extension."""
    alpn: tuple[str, ...]
    """ALPN protocol names in the client's order (Latin-1 decoded); empty without the extension."""
    length: int
    """Bytes of ``data`` up to the end of the record that completes the ClientHello."""


def parse(data: bytes | bytearray | memoryview) -> ClientHello | NeedMore:
    """Parse the ClientHello at the start of ``data``; raise :class:`Malformed` if there is none."""
    # Our own immutable copy of what can matter (nothing past the cap can): no buffer of the
    # caller's is held (a memoryview on a bytearray would stop it from growing).
    buf = bytes(data[:MAX_CLIENT_HELLO])
    have = len(buf)
    message = bytearray()  # handshake bytes of the complete records so far
    total: int | None = None  # length of the handshake message (4-byte header included), once known
    pos = 0  # start of the current record
    while True:
        header = buf[pos : pos + _RECORD_HEADER]
        _check_record_header(header)
        expected = 4 if total is None else total  # handshake bytes known to be due, so far
        if len(header) < _RECORD_HEADER:
            # At least this header and one record holding the rest.
            return _need_more(pos + _RECORD_HEADER + expected - len(message), have)
        size = int.from_bytes(header[3:5])
        if not 1 <= size <= _MAX_FRAGMENT:
            raise Malformed(f"record fragment of {size} bytes")
        end = pos + _RECORD_HEADER + size
        fragment = buf[pos + _RECORD_HEADER : end]  # partial if end > have
        if total is None:
            head = bytes(message) + fragment[:4]  # message has < 4 bytes here
            if head and head[0] != _CLIENT_HELLO:
                raise Malformed(f"handshake message type {head[0]}, not ClientHello")
            if len(head) >= 4:
                total = expected = 4 + int.from_bytes(head[1:4])
        if total is not None:
            missing = total - len(message)
            if pos + _RECORD_HEADER + missing > MAX_CLIENT_HELLO:
                raise Malformed(f"ClientHello needs more than {MAX_CLIENT_HELLO} bytes")
            if size > missing:
                raise Malformed("the record that ends the ClientHello carries more data")
        rest = expected - len(message) - size  # handshake bytes due after this record (at least)
        if end > have:
            return _need_more(end + (_RECORD_HEADER + rest if rest > 0 else 0), have)
        message += fragment
        pos = end
        if total is not None and rest == 0:
            server_name, alpn = _parse_body(bytes(message), 4)
            return ClientHello(server_name, alpn, pos)


def _check_record_header(header: bytes) -> None:
    """Check the bytes of a (possibly partial) record header, so garbage fails at once."""
    if header and header[0] != _HANDSHAKE:
        raise Malformed(f"record type {header[0]}, not handshake")
    if len(header) >= 2 and header[1] != 3:
        raise Malformed(f"record version major {header[1]}")
    if len(header) >= 3 and not 1 <= header[2] <= 4:
        raise Malformed(f"record version 3.{header[2]}")


def _need_more(total_needed: int, have: int) -> NeedMore:
    if total_needed > MAX_CLIENT_HELLO:
        raise Malformed(f"ClientHello needs more than {MAX_CLIENT_HELLO} bytes")
    assert total_needed > have  # a bug here would make callers spin on a complete buffer
    return NeedMore(total_needed)


class _Reader:
    """A cursor over ``buf[pos:end]``; every read that would pass ``end`` is :class:`Malformed`."""

    __slots__ = ("buf", "end", "pos")

    def __init__(self, buf: bytes, pos: int, end: int) -> None:
        self.buf = buf
        self.pos = pos
        self.end = end

    def left(self) -> int:
        return self.end - self.pos

    def take(self, n: int, what: str) -> bytes:
        if n > self.end - self.pos:
            raise Malformed(f"{what} overruns its container")
        start = self.pos
        self.pos += n
        return self.buf[start : self.pos]

    def uint(self, n: int, what: str) -> int:
        return int.from_bytes(self.take(n, what))

    def vector(self, length_bytes: int, what: str) -> _Reader:
        """The next ``<length><bytes>`` vector, as a reader of its own."""
        n = self.uint(length_bytes, f"{what} length")
        if n > self.end - self.pos:
            raise Malformed(f"{what} overruns its container")
        sub = _Reader(self.buf, self.pos, self.pos + n)
        self.pos += n
        return sub

    def done(self, what: str) -> None:
        if self.pos != self.end:
            raise Malformed(f"{self.end - self.pos} bytes of trailing data after {what}")


def _parse_body(message: bytes, start: int) -> tuple[str | None, tuple[str, ...]]:
    body = _Reader(message, start, len(message))
    version = body.uint(2, "legacy_version")
    if not 0x0301 <= version <= 0x0304:
        raise Malformed(f"legacy_version {version:#06x}")
    body.take(32, "random")
    if body.vector(1, "session_id").left() > 32:
        raise Malformed("session_id longer than 32 bytes")
    suites = body.vector(2, "cipher_suites").left()
    if suites < 2 or suites % 2:
        raise Malformed(f"cipher_suites of {suites} bytes")
    if body.vector(1, "compression_methods").left() < 1:
        raise Malformed("no compression method")
    server_name: str | None = None
    alpn: tuple[str, ...] = ()
    if body.left() == 0:
        return server_name, alpn  # no extensions block (TLS 1.0-1.2)
    extensions = body.vector(2, "extensions")
    body.done("the extensions")
    # The hot loop (some 10-20 extensions per hello): walked by hand, readers only where we look.
    buf, pos, end = message, extensions.pos, extensions.end
    seen: set[int] = set()
    while pos < end:
        if end - pos < 4:
            raise Malformed("extension header overruns the extensions")
        ext_type = buf[pos] << 8 | buf[pos + 1]
        ext_end = pos + 4 + (buf[pos + 2] << 8 | buf[pos + 3])
        if ext_end > end:
            raise Malformed(f"extension {ext_type} overruns the extensions")
        if ext_type in seen:
            raise Malformed(f"extension {ext_type} appears twice")
        seen.add(ext_type)
        if ext_type == _EXT_SERVER_NAME:
            server_name = _parse_server_name(_Reader(buf, pos + 4, ext_end))
        elif ext_type == _EXT_ALPN:
            alpn = _parse_alpn(_Reader(buf, pos + 4, ext_end))
        pos = ext_end
    return server_name, alpn


def _parse_server_name(ext: _Reader) -> str:
    names = ext.vector(2, "server_name list")
    ext.done("the server_name list")
    if names.uint(1, "server_name type") != _HOST_NAME:
        raise Malformed("server_name entry is not a host_name")
    name = names.vector(2, "host_name")
    names.done("the host_name (one server_name entry only)")
    raw = name.take(name.left(), "host_name")
    if not 1 <= len(raw) <= 253:
        raise Malformed(f"host_name of {len(raw)} bytes")
    if raw.translate(None, _HOST_NAME_BYTES):
        raise Malformed("host_name has bytes other than ASCII letters, digits, '-', '_' and '.'")
    labels = raw.split(b".")
    if b"" in labels or max(map(len, labels)) > 63:
        raise Malformed(
            "host_name has an empty label (leading, doubled or trailing dot) or one over 63 bytes"
        )
    return raw.lower().decode("ascii")


def _parse_alpn(ext: _Reader) -> tuple[str, ...]:
    names = ext.vector(2, "ALPN list")
    ext.done("the ALPN list")
    if not names.left():
        raise Malformed("empty ALPN list")
    protocols: list[str] = []
    while names.left():
        protocol = names.vector(1, "ALPN protocol")
        if not protocol.left():
            raise Malformed("empty ALPN protocol name")
        protocols.append(protocol.take(protocol.left(), "ALPN protocol").decode("latin-1"))
    return tuple(protocols)


_SNI_SUFFIX = ".svc.meshgate"
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")  # as meshgate.pki.identities (not imported: lean)


def _is_dns_label(value: str) -> bool:
    return len(value) <= 63 and _DNS_LABEL.fullmatch(value) is not None


def sni_for_service(server_name: str | None) -> tuple[str, str] | None:
    """``(service, zone)`` for ``<service>.<zone>.svc.meshgate``; None for any other name.

    Both are DNS labels (``[a-z0-9]([-a-z0-9]*[a-z0-9])?``, at most 63 characters). The name is
    expected lowercased (as :func:`parse` returns it): uppercase is refused, not folded.
    """
    if server_name is None or not server_name.endswith(_SNI_SUFFIX):
        return None
    service, dot, zone = server_name[: -len(_SNI_SUFFIX)].partition(".")
    if not dot or not _is_dns_label(service) or not _is_dns_label(zone):
        return None
    return service, zone
