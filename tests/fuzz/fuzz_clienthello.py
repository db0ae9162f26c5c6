"""Coverage-guided fuzzing of the ClientHello parser with atheris (libFuzzer); run by hand, not by pytest.

    pip install atheris
    python tests/fuzz/fuzz_clienthello.py CORPUS_DIR -max_total_time=120 -artifact_prefix=CRASH_DIR/

The arguments go to libFuzzer (``-help=1`` lists them). An empty or missing CORPUS_DIR is first
seeded with real ClientHellos from Python's ssl, whole and in several records. A crash is any
exception but Malformed, or a result that contradicts its input (see ``check``).
"""

from __future__ import annotations

import contextlib
import ssl
import sys
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["meshgate.proxy.clienthello"]):
    from meshgate.proxy.clienthello import MAX_CLIENT_HELLO, ClientHello, Malformed, NeedMore, parse


def deframe(stream: bytes) -> bytes:
    """The handshake bytes of a stream of whole TLS records."""
    out, pos = [], 0
    while pos < len(stream):
        size = int.from_bytes(stream[pos + 3 : pos + 5], "big")
        out.append(stream[pos + 5 : pos + 5 + size])
        pos += 5 + size
    return b"".join(out)


def check(data: bytes) -> None:
    try:
        result = parse(data)
    except Malformed:
        return
    if isinstance(result, NeedMore):
        if not len(data) < result.total_needed <= MAX_CLIENT_HELLO:
            raise AssertionError(f"NeedMore({result.total_needed}) for {len(data)} bytes")
        return
    if not isinstance(result, ClientHello) or not 0 < result.length <= len(data):
        raise AssertionError(f"{result!r} for {len(data)} bytes")
    name = result.server_name
    if name is not None and (
        name != name.lower() or name.encode("ascii") not in deframe(data[: result.length]).lower()
    ):
        raise AssertionError(f"server_name {name!r} is not in the input")
    # A proper prefix of an accepted hello is a valid prefix.
    cut = result.length // 2
    if not isinstance(parse(data[:cut]), NeedMore):
        raise AssertionError(f"prefix of {cut} bytes of an accepted hello is not NeedMore")


def test_one_input(data: bytes) -> None:
    check(data)


def client_hello(server_hostname: str | None, alpn: list[str] | None, maximum: ssl.TLSVersion) -> bytes:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.maximum_version = maximum
    if alpn:
        ctx.set_alpn_protocols(alpn)
    outgoing = ssl.MemoryBIO()
    tls = ctx.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname=server_hostname)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def reframe(stream: bytes, size: int) -> bytes:
    message = deframe(stream)
    chunks = [message[i : i + size] for i in range(0, len(message), size)]
    return b"".join(b"\x16\x03\x01" + len(c).to_bytes(2, "big") + c for c in chunks)


def seed(corpus: Path) -> None:
    corpus.mkdir(parents=True, exist_ok=True)
    if any(corpus.iterdir()):
        return
    seeds = [
        client_hello("a.eu.svc.meshgate", ["h2", "http/1.1"], ssl.TLSVersion.TLSv1_3),
        client_hello("db.eu.svc.meshgate", ["http/1.1"], ssl.TLSVersion.TLSv1_2),
        client_hello(None, None, ssl.TLSVersion.TLSv1_3),
    ]
    seeds += [reframe(seeds[0], size) for size in (1, 7, 200)]
    for i, data in enumerate(seeds):
        (corpus / f"seed-{i}").write_bytes(data)


def main() -> None:
    corpus = [arg for arg in sys.argv[1:] if not arg.startswith("-")]
    if corpus:
        seed(Path(corpus[0]))
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
