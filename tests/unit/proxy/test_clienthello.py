"""The zone ingress's ClientHello parser: real hellos (Python's ssl, ``openssl s_client``), records,
one refusal per rule, ``sni_for_service``, and fuzzing with hypothesis."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from meshgate.proxy.clienthello import (
    MAX_CLIENT_HELLO,
    ClientHello,
    Malformed,
    NeedMore,
    parse,
    sni_for_service,
)

# --- building hellos --------------------------------------------------------------------------


def ssl_hello(
    server_hostname: str | None,
    alpn: list[str] | None = None,
    *,
    minimum: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
    maximum: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3,
) -> bytes:
    """What Python's ssl (OpenSSL) sends first as a client: its ClientHello."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = minimum
    ctx.maximum_version = maximum
    if alpn:
        ctx.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        return outgoing.read()
    raise AssertionError("the handshake cannot go on without the server")


def u8(n: int) -> bytes:
    return n.to_bytes(1, "big")


def u16(n: int) -> bytes:
    return n.to_bytes(2, "big")


def u24(n: int) -> bytes:
    return n.to_bytes(3, "big")


def vec(length_bytes: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(length_bytes, "big") + payload


def ext(ext_type: int, payload: bytes) -> bytes:
    return u16(ext_type) + vec(2, payload)


def sni_ext(*names: bytes, name_type: int = 0) -> bytes:
    return ext(0, vec(2, b"".join(u8(name_type) + vec(2, name) for name in names)))


def alpn_ext(*protocols: bytes) -> bytes:
    return ext(16, vec(2, b"".join(vec(1, p) for p in protocols)))


DEFAULT_EXTENSIONS = (
    sni_ext(b"a.eu.svc.meshgate") + alpn_ext(b"h2", b"http/1.1") + ext(0x002B, b"\x02\x03\x04")
)


def body(
    *,
    version: int = 0x0303,
    session_id: bytes = b"\x07" * 32,
    suites: bytes = b"\x13\x01\x13\x02",
    compression: bytes = b"\x00",
    extensions: bytes | None = DEFAULT_EXTENSIONS,
) -> bytes:
    out = u16(version) + b"\x5a" * 32 + vec(1, session_id) + vec(2, suites) + vec(1, compression)
    return out if extensions is None else out + vec(2, extensions)


def handshake(payload: bytes, hs_type: int = 1) -> bytes:
    return u8(hs_type) + u24(len(payload)) + payload


def frame(message: bytes, sizes: list[int] | None = None, *, version: int = 0x0301, rtype: int = 22) -> bytes:
    """``message`` in TLS records of ``sizes`` bytes (the last one takes the rest)."""
    out, pos = [], 0
    for size in [*(sizes or []), len(message)]:
        chunk = message[pos : pos + size]
        if chunk:
            out.append(u8(rtype) + u16(version) + vec(2, chunk))
        pos += len(chunk)
    return b"".join(out)


def hello(**kw: Any) -> bytes:
    """A one-record ClientHello, ``body(**kw)``."""
    return frame(handshake(body(**kw)))


def handshake_of(stream: bytes) -> bytes:
    """The handshake bytes of a stream of whole records."""
    out, pos = [], 0
    while pos < len(stream):
        size = int.from_bytes(stream[pos + 3 : pos + 5], "big")
        out.append(stream[pos + 5 : pos + 5 + size])
        pos += 5 + size
    return b"".join(out)


def parsed(data: bytes) -> ClientHello:
    result = parse(data)
    assert isinstance(result, ClientHello), result
    return result


# Real hellos, made once: the fuzzing below mutates them.
REAL = {
    "tls13-alpn": ssl_hello("a.eu.svc.meshgate", ["h2", "http/1.1"]),
    "tls13-only": ssl_hello("api.us-east-1.svc.meshgate", minimum=ssl.TLSVersion.TLSv1_3),
    "tls12-only": ssl_hello("db.eu.svc.meshgate", ["http/1.1"], maximum=ssl.TLSVersion.TLSv1_2),
    "no-sni": ssl_hello(None, ["h2"]),
    "idna": ssl_hello("bücher.example", ["h2"]),
    "long-name": ssl_hello(".".join(["x" * 63] * 3 + ["y" * 61]), ["h2"]),
}


# --- real hellos --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("server_hostname", "alpn", "minimum", "maximum", "expected_name"),
    [
        (
            "a.eu.svc.meshgate",
            ["h2", "http/1.1"],
            ssl.TLSVersion.TLSv1_2,
            ssl.TLSVersion.TLSv1_3,
            "a.eu.svc.meshgate",
        ),
        ("a.eu.svc.meshgate", None, ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3, "a.eu.svc.meshgate"),
        (
            "api.us-east-1.svc.meshgate",
            ["h2"],
            ssl.TLSVersion.TLSv1_3,
            ssl.TLSVersion.TLSv1_3,
            "api.us-east-1.svc.meshgate",
        ),
        (
            "db.eu.svc.meshgate",
            ["http/1.1"],
            ssl.TLSVersion.TLSv1_2,
            ssl.TLSVersion.TLSv1_2,
            "db.eu.svc.meshgate",
        ),
        ("db.eu.svc.meshgate", None, ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2, "db.eu.svc.meshgate"),
        (
            "Web.EU.Svc.MeshGate",
            ["h2"],
            ssl.TLSVersion.TLSv1_2,
            ssl.TLSVersion.TLSv1_3,
            "web.eu.svc.meshgate",
        ),
        ("bücher.example", None, ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3, "xn--bcher-kva.example"),
        ("under_score.example", None, ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3, "under_score.example"),
    ],
)
def test_python_ssl_hellos(
    server_hostname: str,
    alpn: list[str] | None,
    minimum: ssl.TLSVersion,
    maximum: ssl.TLSVersion,
    expected_name: str,
) -> None:
    data = ssl_hello(server_hostname, alpn, minimum=minimum, maximum=maximum)
    result = parsed(data)
    assert result.server_name == expected_name
    assert result.alpn == tuple(alpn or ())
    assert result.length == len(data)


def test_no_sni_without_server_hostname_or_for_an_ip() -> None:
    assert parsed(ssl_hello(None, ["h2"])).server_name is None
    assert parsed(ssl_hello("127.0.0.1")).server_name is None  # OpenSSL sends no SNI for an IP


def test_longest_name() -> None:
    name = ".".join(["x" * 63] * 3 + ["y" * 61])
    assert len(name) == 253
    assert parsed(REAL["long-name"]).server_name == name


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl binary")
@pytest.mark.parametrize("protocol", ["-tls1_2", "-tls1_3"])
def test_openssl_s_client_hello(protocol: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)
        port = listener.getsockname()[1]
        command = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "b.eu.svc.meshgate"]
        command += ["-alpn", "h2", protocol]
        with subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        ) as client:
            try:
                conn, _ = listener.accept()
                with conn:
                    conn.settimeout(10)
                    data = b""
                    result: ClientHello | NeedMore = NeedMore(1)
                    while isinstance(result, NeedMore):
                        chunk = conn.recv(4096)
                        assert chunk, f"s_client closed after {len(data)} bytes"
                        data += chunk
                        result = parse(data)
            finally:
                try:
                    client.communicate(timeout=10)
                except subprocess.TimeoutExpired:
                    client.kill()
                    client.communicate()
    assert result.server_name == "b.eu.svc.meshgate"
    assert result.alpn == ("h2",)
    assert result.length == len(data)
    assert sni_for_service(result.server_name) == ("b", "eu")


# --- records and prefixes -----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(REAL))
def test_hello_split_in_two_records_at_every_point(name: str) -> None:
    real = REAL[name]
    message = handshake_of(real)
    expected = parsed(real)
    for cut in range(1, len(message)):
        data = frame(message, [cut], version=0x0303)
        assert parsed(data) == ClientHello(expected.server_name, expected.alpn, len(data))


def test_hello_in_one_byte_records() -> None:
    message = handshake_of(REAL["tls13-alpn"])
    data = frame(message, [1] * len(message))
    assert len(data) == 6 * len(message)
    assert parsed(data) == ClientHello("a.eu.svc.meshgate", ("h2", "http/1.1"), len(data))


@pytest.mark.parametrize("name", sorted(REAL))
def test_every_prefix_needs_more_and_no_more_than_the_hello(name: str) -> None:
    for data in (REAL[name], frame(handshake_of(REAL[name]), [3, 100, 7])):
        for cut in range(len(data)):
            result = parse(data[:cut])
            assert isinstance(result, NeedMore), (cut, result)
            assert cut < result.total_needed <= len(data)
        assert parsed(data).length == len(data)


def test_bytes_after_the_hello_are_not_looked_at() -> None:
    real = REAL["tls13-alpn"]
    for after in (b"\x17\x03\x03\x00\x10" + b"\xff" * 16, b"GET / HTTP/1.1\r\n", b"\x00" * 70_000):
        assert parsed(real + after).length == len(real)


def test_bytearray_and_memoryview_input() -> None:
    real = REAL["tls13-alpn"]
    buffer = bytearray(real)
    assert parsed(buffer) == parsed(memoryview(buffer)) == parsed(real)
    buffer += b"more"  # no view of the caller's buffer is kept: it can still grow


def test_synthetic_hello_parses() -> None:
    """The base the refusals below each break in one way."""
    assert parsed(hello()) == ClientHello("a.eu.svc.meshgate", ("h2", "http/1.1"), len(hello()))
    assert parsed(hello(extensions=None)) == ClientHello(None, (), len(hello(extensions=None)))
    assert parsed(hello(extensions=b"")).server_name is None
    assert parsed(hello(session_id=b"")).server_name == "a.eu.svc.meshgate"
    grease = parsed(hello(extensions=alpn_ext(b"\x0a\x0a", b"h2")))
    assert grease.alpn == ("\n\n", "h2")


# --- refusals: one per rule ---------------------------------------------------------------------


def malformed(data: bytes, match: str) -> None:
    with pytest.raises(Malformed, match=match) as caught:
        parse(data)
    assert caught.value.reason == str(caught.value)


@pytest.mark.parametrize("rtype", [0, 20, 21, 23, 24, 0x80])
def test_record_type_other_than_handshake(rtype: int) -> None:
    malformed(frame(handshake(body()), rtype=rtype), "record type")
    malformed(u8(rtype), "record type")  # from the first byte


def test_other_record_before_the_end_of_the_hello() -> None:
    message = handshake(body())
    data = frame(message[:10]) + frame(message[10:], rtype=23)
    malformed(data, "record type 23")


def test_sslv2_hello() -> None:
    sslv2 = bytes.fromhex("802e0103010015000000100700c0030080010080060040040080020080") + b"\x11" * 16
    malformed(sslv2, "record type 128")


@pytest.mark.parametrize("version", [0x0300, 0x0305, 0x0201, 0x0000, 0x0303 + 0x0100, 0xFEFD])
def test_bad_record_version(version: int) -> None:
    malformed(frame(handshake(body()), version=version), "record version")
    malformed(frame(handshake(body()), version=version)[:3], "record version")


def test_bad_record_version_in_a_later_record() -> None:
    message = handshake(body())
    malformed(frame(message[:10]) + frame(message[10:], version=0x0300), "record version 3.0")


def test_http_text() -> None:
    malformed(b"GET / HTTP/1.1\r\nHost: a.eu.svc.meshgate\r\n\r\n", "record type 71")
    malformed(b"G", "record type")
    malformed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "record type")


@pytest.mark.parametrize("hs_type", [0, 2, 4, 11, 16, 20, 255])
def test_handshake_type_other_than_client_hello(hs_type: int) -> None:
    malformed(frame(handshake(body(), hs_type=hs_type)), "handshake message type")
    malformed(frame(handshake(body(), hs_type=hs_type))[:6], "handshake message type")


def test_empty_and_oversize_records() -> None:
    malformed(b"\x16\x03\x01\x00\x00", "record fragment of 0 bytes")
    malformed(b"\x16\x03\x01\x40\x01\x01", "record fragment of 16385 bytes")


def test_legacy_version() -> None:
    malformed(hello(version=0x0300), "legacy_version")
    malformed(hello(version=0x0305), "legacy_version")


@pytest.mark.parametrize(
    ("data", "match"),
    [
        # the handshake length is shorter than what its fields say
        pytest.param(frame(handshake(body()[:-10])), "extensions overruns", id="message-shorter-than-fields"),
        pytest.param(frame(handshake(body()[:20])), "random overruns", id="random-overruns"),
        pytest.param(
            frame(handshake(body(session_id=b"")[:34] + b"\x05\x01")),
            "session_id overruns",
            id="session_id-overruns",
        ),
        pytest.param(
            frame(handshake(body(session_id=b"")[:35] + b"\x00\x08\x13\x01")),
            "cipher_suites overruns",
            id="cipher_suites-overruns",
        ),
        pytest.param(
            frame(handshake(body(session_id=b"")[:41] + b"\x02\x00")),
            "compression_methods overruns",
            id="compression_methods-overruns",
        ),
        pytest.param(
            frame(handshake(body(extensions=None) + b"\x00\x10\x00\x00")),
            "extensions overruns",
            id="extensions-overruns",
        ),
        pytest.param(
            hello(extensions=b"\x00\x0a\x00\x05\x00"), "extension 10 overruns", id="extension-10-overruns"
        ),
        pytest.param(
            hello(extensions=b"\x00\x0a\x00"), "extension header overruns", id="extension-header-overruns"
        ),
        pytest.param(
            hello(extensions=ext(0, b"\x00\x10\x00\x00\x01a")),
            "server_name list overruns",
            id="server_name-list-overruns",
        ),
        pytest.param(
            hello(extensions=ext(0, vec(2, b"\x00\x00\x09abc"))),
            "host_name overruns",
            id="host_name-overruns",
        ),
        pytest.param(
            hello(extensions=ext(0, vec(2, b"\x00\x00"))),
            "host_name length overruns",
            id="host_name-length-overruns",
        ),
        pytest.param(
            hello(extensions=ext(16, b"\x00\x08\x02h2")), "ALPN list overruns", id="ALPN-list-overruns"
        ),
        pytest.param(
            hello(extensions=ext(16, vec(2, b"\x05h2"))),
            "ALPN protocol overruns",
            id="ALPN-protocol-overruns",
        ),
    ],
)
def test_lengths_that_overrun(data: bytes, match: str) -> None:
    malformed(data, match)


def test_handshake_longer_than_its_records_needs_more() -> None:
    """Not an overrun: more records may come (and the cap bounds how many)."""
    result = parse(frame(u8(1) + u24(len(body()) + 10) + body()))
    assert result == NeedMore(5 + 4 + len(body()) + 5 + 10)


def test_session_id_over_32_bytes() -> None:
    malformed(hello(session_id=b"\x01" * 33), "session_id longer than 32")


@pytest.mark.parametrize("suites", [b"\x13", b"\x13\x01\x13", b""])
def test_cipher_suites_odd_or_empty(suites: bytes) -> None:
    malformed(hello(suites=suites), "cipher_suites of")


def test_no_compression_method() -> None:
    malformed(hello(compression=b""), "no compression method")


@pytest.mark.parametrize(
    "extensions",
    [
        ext(10, b"\x00\x02\x00\x1d") + ext(10, b"\x00\x02\x00\x17"),
        sni_ext(b"a.eu.svc.meshgate") + sni_ext(b"a.eu.svc.meshgate"),
        alpn_ext(b"h2") + ext(43, b"\x02\x03\x04") + alpn_ext(b"h2"),
        ext(0xFF01, b"") + ext(0xFF01, b""),
    ],
)
def test_duplicate_extensions(extensions: bytes) -> None:
    malformed(hello(extensions=extensions), "appears twice")


def test_two_host_names() -> None:
    malformed(hello(extensions=sni_ext(b"a.eu.svc.meshgate", b"b.eu.svc.meshgate")), "one server_name entry")
    malformed(hello(extensions=sni_ext(b"a.eu.svc.meshgate", b"a.eu.svc.meshgate")), "one server_name entry")


def test_server_name_entries_other_than_host_name() -> None:
    malformed(hello(extensions=sni_ext(b"a.eu.svc.meshgate", name_type=1)), "not a host_name")
    malformed(hello(extensions=ext(0, b"")), "server_name list length overruns")
    malformed(hello(extensions=ext(0, vec(2, b""))), "server_name type overruns")


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("bücher.example".encode(), "bytes other than"),
        (b"caf\xe9.example", "bytes other than"),
        (b"a.eu.svc.meshgate\x00.evil", "bytes other than"),
        (b"a b.example", "bytes other than"),
        (b"a.eu.svc.meshgate\n", "bytes other than"),
        (b"[::1]", "bytes other than"),
        (b"::1", "bytes other than"),
        (b"*.example", "bytes other than"),
        (b"a/b.example", "bytes other than"),
        (b"a.eu.svc.meshgate.", "empty label"),
        (b".a.eu.svc.meshgate", "empty label"),
        (b"a..eu.svc.meshgate", "empty label"),
        (b".", "empty label"),
        (b"x" * 64 + b".example", "over 63 bytes"),
        (b"", "host_name of 0 bytes"),
        (b".".join([b"x" * 63] * 4), "host_name of 255 bytes"),
        (b"a" * 63 + b"." + b"b" * 63 + b"." + b"c" * 63 + b"." + b"d" * 62, "host_name of 254 bytes"),
    ],
)
def test_bad_host_names(name: bytes, match: str) -> None:
    malformed(hello(extensions=sni_ext(name)), match)


def test_alpn_lists() -> None:
    malformed(hello(extensions=ext(16, vec(2, b""))), "empty ALPN list")
    malformed(hello(extensions=alpn_ext(b"h2", b"")), "empty ALPN protocol")
    malformed(hello(extensions=ext(16, vec(2, b"\x02h2") + b"\x00")), "trailing data after the ALPN list")


@pytest.mark.parametrize("claimed", [MAX_CLIENT_HELLO - 8, MAX_CLIENT_HELLO, 0xFFFFFF])
def test_oversize_claim_fails_at_once(claimed: int) -> None:
    start = frame(u8(1) + u24(claimed) + body())[:200]
    malformed(start, "needs more than 65536 bytes")
    malformed(start[:9], "needs more than 65536 bytes")  # from the handshake header alone


def test_oversize_through_many_records() -> None:
    """The cap counts record headers too: tiny records cannot make the caller buffer more."""
    message = handshake(body(extensions=ext(0xFFFF, b"\x00" * 12_000)))
    data = frame(message, [1] * len(message))
    assert len(data) > MAX_CLIENT_HELLO
    malformed(data, "needs more than 65536 bytes")
    malformed(data[:MAX_CLIENT_HELLO], "needs more than 65536 bytes")
    assert isinstance(parse(data[:60]), NeedMore)  # the claim alone would fit: the framing does not
    # Refused as soon as the bytes show that the rest cannot fit: record i starts at 6 * i, and the
    # least the stream can need from there is 6 * i + 5 + (len(message) - i).
    last = max(i for i in range(len(message)) if 5 * i + 5 + len(message) <= MAX_CLIENT_HELLO)
    assert isinstance(parse(data[: 6 * last + 4]), NeedMore)  # within the last header that fits
    malformed(data[: 6 * last + 5], "needs more than 65536 bytes")  # that record is not the last


def test_largest_hello_that_fits() -> None:
    padding = MAX_CLIENT_HELLO - len(frame(handshake(body(extensions=ext(21, b"")))))
    data = frame(handshake(body(extensions=ext(21, b"\x00" * padding))), [16_384] * 3)
    assert len(data) == MAX_CLIENT_HELLO + 15  # the three more record headers: one byte too many each
    malformed(data, "needs more than")
    data = frame(handshake(body(extensions=ext(21, b"\x00" * (padding - 15)))), [16_384] * 3)
    assert len(data) == MAX_CLIENT_HELLO
    assert parsed(data).length == MAX_CLIENT_HELLO


def test_trailing_garbage() -> None:
    malformed(frame(handshake(body() + b"\x00")), "1 bytes of trailing data after the extensions")
    malformed(frame(handshake(body(extensions=None) + b"\x00")), "extensions length overruns")
    malformed(
        hello(extensions=ext(0, vec(2, b"\x00" + vec(2, b"a.eu")) + b"\x00")),
        "trailing data after the server_name list",
    )
    # more data in the record that completes the hello (TLS sends nothing else before the ServerHello)
    message = handshake(body())
    malformed(frame(message + b"\x16"), "carries more data")
    malformed(frame(u8(1) + u24(len(body()) - 10) + body()), "carries more data")
    malformed(frame(message[:10]) + frame(message[10:] + b"\x00\x00"), "carries more data")


# --- fuzzing ------------------------------------------------------------------------------------
# Hypothesis costs about a millisecond an example here and parse() some 30 microseconds, so each
# example is one cheap draw (a byte string, which hypothesis still shrinks) that the test expands
# into several inputs. MESHGATE_FUZZ_EXAMPLES=100000 runs a longer campaign by hand.

FUZZ_EXAMPLES = int(os.environ.get("MESHGATE_FUZZ_EXAMPLES", "2000"))
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
REAL_HELLOS = sorted(REAL.values())


def check_result(data: bytes) -> ClientHello | NeedMore | None:
    """parse(data) may only return or raise Malformed; check what it returns against ``data``."""
    try:
        result = parse(data)
    except Malformed:
        return None
    if isinstance(result, NeedMore):
        assert len(data) < result.total_needed <= MAX_CLIENT_HELLO
        return result
    assert isinstance(result, ClientHello)
    assert 0 < result.length <= min(len(data), MAX_CLIENT_HELLO)
    name = result.server_name
    if name is not None:  # from the bytes it read, once record headers are taken out
        assert name.encode("ascii") in handshake_of(data[: result.length]).lower()
        assert name == name.lower()
        assert 1 <= len(name) <= 253
    return result


@FUZZ
@given(st.binary(max_size=600))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    """As they come, then behind a record header, then as the body of a ClientHello record."""
    check_result(data)
    check_result(b"\x16\x03\x01" + data)
    body = b"\x03\x03" + b"\x5a" * 32 + data  # so that the session_id on comes from data
    check_result(b"\x16\x03\x03" + u16(len(body) + 4) + handshake(body))


def mutations(program: bytes) -> list[bytes]:
    """A real hello (``program[0]``), maybe in records of 1..128 bytes (``program[1]``), then
    edited by 4-byte instructions ``op, at (2 bytes), value``: each step's result."""
    message = handshake_of(REAL_HELLOS[program[0] % len(REAL_HELLOS)])
    records = program[1] - 127
    data = bytearray(frame(message, [records] * len(message)) if records > 0 else frame(message))
    steps = []
    for i in range(2, len(program) - 3, 4):
        op, at_hi, at_lo, value = program[i : i + 4]
        at = (at_hi << 8 | at_lo) % (len(data) + 1)
        op %= 6
        if op == 0 and at < len(data):  # flip bits
            data[at] ^= value or 1
        elif op == 1 and at < len(data):  # set a byte
            data[at] = value
        elif op == 2:  # truncate
            del data[at:]
        elif op == 3:  # extend
            data += bytes([value]) * (value % 16 + 1)
        elif op == 4:  # insert
            data[at:at] = bytes([value])
        elif op == 5:  # delete
            del data[at : at + value % 8 + 1]
        steps.append(bytes(data))
    return steps


@FUZZ
@given(st.binary(min_size=6, max_size=26))
def test_fuzz_mutated_real_hellos(program: bytes) -> None:
    for data in mutations(program):
        note(f"input {data!r}")
        check_result(data)


HOST_NAMES = [b"a.eu.svc.meshgate", b"A.EU.svc.meshgate", b"x" * 64, b"a..b", b"caf\xe9", b"", b"a.b."]
NAMES = st.one_of(st.sampled_from(HOST_NAMES), st.binary(max_size=12))
SNI_PAYLOADS = st.one_of(
    st.lists(NAMES, min_size=1, max_size=2).map(lambda names: sni_ext(*names)[4:]), st.binary(max_size=12)
)
ALPN_PAYLOADS = st.one_of(
    st.lists(st.binary(max_size=4), min_size=1, max_size=3).map(lambda names: alpn_ext(*names)[4:]),
    st.binary(max_size=8),
)


@st.composite
def structured_hellos(draw: st.DrawFn) -> bytes:
    """ClientHellos built field by field, each field sometimes wrong, in random records."""
    extensions = []
    for ext_type in draw(st.lists(st.sampled_from([0, 16, 43, 10, 0xFFFF]), max_size=5)):
        payloads = {0: SNI_PAYLOADS, 16: ALPN_PAYLOADS}.get(ext_type, st.binary(max_size=6))
        extensions.append(ext(ext_type, draw(payloads)))
    message = handshake(
        body(
            version=draw(st.sampled_from([0x0303, 0x0303, 0x0301, 0x0300])),
            session_id=draw(st.binary(max_size=34)),
            suites=draw(st.sampled_from([b"\x13\x01", b"\x00\xff" * 3, b"\x13\x01", b"\x13\x01\x00", b""])),
            compression=draw(st.sampled_from([b"\x00", b"\x00\x01", b"\x00", b""])),
            extensions=None if draw(st.integers(0, 9)) == 0 else b"".join(extensions),
        )
        + draw(st.sampled_from([b"", b"", b"", b"", b"\x00"])),  # trailing garbage, sometimes
        hs_type=draw(st.sampled_from([1, 1, 1, 1, 2])),
    )
    return frame(
        message,
        [draw(st.integers(1, 200))] * 3,
        version=draw(st.sampled_from([0x0301, 0x0303, 0x0304, 0x0300])),
    )


@settings(FUZZ, max_examples=max(FUZZ_EXAMPLES // 6, 100))
@given(structured_hellos())
def test_fuzz_structured_hellos(data: bytes) -> None:
    """Each one whole, and every prefix of it (which must need more, or already be refused)."""
    result = check_result(data)
    for cut in range(len(data)):
        prefix = check_result(data[:cut])
        if result is not None:
            assert isinstance(prefix, NeedMore)
        if prefix is None:
            break


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(REAL_HELLOS),
    st.lists(st.integers(1, 400), min_size=1, max_size=30),
    st.sampled_from([0x0301, 0x0302, 0x0303, 0x0304]),
)
def test_fuzz_reframed_hellos_parse_the_same(real: bytes, sizes: list[int], version: int) -> None:
    """Any framing of a real hello parses to the same names, with its own length."""
    expected = parsed(real)
    data = frame(handshake_of(real), sizes, version=version)
    assert parsed(data) == ClientHello(expected.server_name, expected.alpn, len(data))


def test_parse_time_is_bounded_on_worst_cases() -> None:
    """The costliest inputs within the cap: the most records, the most extensions, the longest body."""
    most_records = frame(handshake(body(extensions=ext(21, b"\x00" * 10_800))), [1] * 20_000)
    most_extensions = frame(
        handshake(body(extensions=b"".join(ext(t, b"") for t in range(17, 16_017)))), [16_384] * 3
    )
    duplicate_at_end = frame(
        handshake(body(extensions=b"".join(ext(t, b"") for t in [*range(17, 15_017), 17]))), [16_384] * 3
    )
    longest_alpn = frame(handshake(body(extensions=ext(16, vec(2, b"\x01a" * 30_000)))), [16_384] * 3)
    for data, expect in [
        (most_records, ClientHello),
        (most_extensions, ClientHello),
        (duplicate_at_end, Malformed),
        (longest_alpn, ClientHello),
    ]:
        started = time.perf_counter()
        try:
            result: object = parse(data)
        except Malformed as e:
            result = e
        elapsed = time.perf_counter() - started
        assert isinstance(result, expect), result
        assert len(data) > 60_000
        assert elapsed < 0.5, (expect, elapsed)


def test_typical_parse_is_fast() -> None:
    data = REAL["tls13-alpn"]
    started = time.perf_counter()
    for _ in range(1_000):
        parse(data)
    assert (time.perf_counter() - started) / 1_000 < 0.001  # well under a millisecond a connection


# --- sni_for_service ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.eu.svc.meshgate", ("a", "eu")),
        ("api-v2.us-east-1.svc.meshgate", ("api-v2", "us-east-1")),
        ("0.1.svc.meshgate", ("0", "1")),
        (f"{'s' * 63}.{'z' * 63}.svc.meshgate", ("s" * 63, "z" * 63)),
        ("xn--bcher-kva.eu.svc.meshgate", ("xn--bcher-kva", "eu")),  # an A-label is a DNS label
    ],
)
def test_sni_for_service_accepts(name: str, expected: tuple[str, str]) -> None:
    assert sni_for_service(name) == expected


@pytest.mark.parametrize(
    "name",
    [
        None,
        "",
        "svc.meshgate",
        ".svc.meshgate",
        "eu.svc.meshgate",
        "a.b.eu.svc.meshgate",
        "A.eu.svc.meshgate",
        "a.EU.svc.meshgate",
        "a.eu.SVC.meshgate",
        ".eu.svc.meshgate",
        "a..svc.meshgate",
        "a.eu.svc.meshgate.",
        "a.eu.svc.meshgate.evil.com",
        "a.eu.svc.meshgatex",
        "a.euxsvc.meshgate",
        "a.eu.xsvc.meshgate",
        "a.eu.svc.meshgate\n",
        "-a.eu.svc.meshgate",
        "a-.eu.svc.meshgate",
        "a.-eu.svc.meshgate",
        "a_b.eu.svc.meshgate",
        f"{'s' * 64}.eu.svc.meshgate",
        f"a.{'z' * 64}.svc.meshgate",
        "127.0.0.1",
        "10.0.svc.meshgate.1",
        "[::1]",
        "\u0661.eu.svc.meshgate",  # an Arabic-Indic digit is no [0-9]
        "a.eu.svc.meshgate\x00",
    ],
)
def test_sni_for_service_refuses(name: str | None) -> None:
    assert sni_for_service(name) is None


def test_parsed_name_routes() -> None:
    assert sni_for_service(parsed(REAL["tls13-alpn"]).server_name) == ("a", "eu")
    assert sni_for_service(parsed(REAL["no-sni"]).server_name) is None
    assert sni_for_service(parsed(REAL["idna"]).server_name) is None
