"""The edge's public TLS: the certificate presented is chosen by SNI (exact name, wildcard, else
the default), a new set swaps in for new handshakes only, a bad one changes nothing. Real
handshakes in process; and Debian's testssl against it for Mozilla's intermediate profile."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import ssl
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from edge.public_tls import PublicTls
from meshgate.pki.tls import TlsConfigError
from meshgate.proxy.listener import Listener
from tests.unit.edge.public_certs import PublicCert, self_signed


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


@pytest.fixture
async def listeners() -> AsyncIterator[list[Listener]]:
    started: list[Listener] = []
    yield started
    for listener in started:
        listener.close()
        await listener.wait_drained(1.0)


async def serve(listeners: list[Listener], tls: PublicTls) -> int:
    """A TLS listener with ``tls``'s front context, as the edge's https ports have."""
    listener = Listener("public", lambda _peer: Echo(), tls=tls.context)
    await listener.start("127.0.0.1", 0)
    listeners.append(listener)
    return listener.port


def client_context(maximum: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # self-signed: what is checked is which one came
    context.maximum_version = maximum
    return context


@contextlib.asynccontextmanager
async def connected(
    port: int, sni: str | None, context: ssl.SSLContext | None = None
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1",
        port,
        ssl=context or client_context(),
        server_hostname=sni or "",  # "": no SNI
    )
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def presented(port: int, sni: str | None) -> bytes:
    """The DER certificate the server presents to a client sending ``sni`` (None: no SNI)."""
    async with connected(port, sni) as (_, writer):
        der: bytes = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return der


@pytest.fixture(scope="module")
def certs() -> dict[str, PublicCert]:
    return {
        "www": self_signed("www.example.com", "example.com"),
        "wild": self_signed("*.example.com"),
        "api": self_signed("api.example.com"),
        "shop": self_signed("shop.example.org"),
    }


async def test_the_certificate_is_chosen_by_sni(
    listeners: list[Listener], certs: dict[str, PublicCert]
) -> None:
    tls = PublicTls()
    tls.update([certs["www"].entry, certs["wild"].entry, certs["api"].entry, certs["shop"].entry])
    port = await serve(listeners, tls)
    cases = {
        "www.example.com": "www",
        "WWW.Example.COM": "www",  # names are matched without case
        "example.com": "www",
        "api.example.com": "api",  # an exact name beats the wildcard
        "img.example.com": "wild",
        "shop.example.org": "shop",
        "a.b.example.com": "www",  # a wildcard covers one label only: the default
        "unknown.test": "www",  # no service has it: the first service's
        None: "www",  # no SNI at all: the same
    }
    for sni, expected in cases.items():
        assert await presented(port, sni) == certs[expected].der, sni


async def test_an_update_swaps_certificates_for_new_handshakes_only(
    listeners: list[Listener], certs: dict[str, PublicCert]
) -> None:
    tls = PublicTls()
    tls.update([certs["www"].entry])
    port = await serve(listeners, tls)
    async with connected(port, "www.example.com") as (reader, writer):
        renewed = self_signed("www.example.com", "example.com")
        tls.update([certs["shop"].entry, renewed.entry])  # a renewal, and a new default
        assert await presented(port, "www.example.com") == renewed.der
        assert await presented(port, None) == certs["shop"].der
        assert await presented(port, "img.example.com") == certs["shop"].der  # the wildcard left
        # the connection made before keeps its session and certificate
        assert writer.get_extra_info("ssl_object").getpeercert(binary_form=True) == certs["www"].der
        writer.write(b"still here")
        assert await reader.readexactly(10) == b"still here"
    assert tls.context is tls.context  # the listening socket's context never changes


@pytest.mark.parametrize(
    "problem", ["garbage key", "key of another certificate", "encrypted key", "no certificate"]
)
async def test_a_bad_certificate_raises_and_the_old_ones_stay(
    listeners: list[Listener], certs: dict[str, PublicCert], problem: str
) -> None:
    tls = PublicTls()
    tls.update([certs["www"].entry, certs["api"].entry])
    port = await serve(listeners, tls)
    new = self_signed("www.example.com")
    other_key = ec.generate_private_key(ec.SECP256R1())
    bad = {
        "garbage key": (new.names, new.chain_pem, b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
        "key of another certificate": (new.names, new.chain_pem, other_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())),
        "encrypted key": (new.names, new.chain_pem, other_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"))),
        "no certificate": (new.names, b"", new.key_pem),
    }[problem]  # fmt: skip
    with pytest.raises((ssl.SSLError, ValueError, TlsConfigError)):
        tls.update([self_signed("shop.example.org").entry, bad])  # all or nothing: the good one neither
    assert await presented(port, "www.example.com") == certs["www"].der
    assert await presented(port, "api.example.com") == certs["api"].der
    assert await presented(port, "shop.example.org") == certs["www"].der


def test_there_is_no_context_before_the_first_certificate() -> None:
    tls = PublicTls()
    assert not tls.ready
    tls.update([])
    assert not tls.ready
    with pytest.raises(RuntimeError, match="no certificate yet"):
        _ = tls.context


async def test_without_any_certificate_left_handshakes_fail(
    listeners: list[Listener], certs: dict[str, PublicCert]
) -> None:
    tls = PublicTls()
    tls.update([certs["www"].entry])
    port = await serve(listeners, tls)
    tls.update([])  # the last https service on the port lost its certificate
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await presented(port, "www.example.com")


async def test_tls_below_1_2_and_cbc_suites_are_refused(
    listeners: list[Listener], certs: dict[str, PublicCert]
) -> None:
    tls = PublicTls()
    tls.update([certs["www"].entry])
    port = await serve(listeners, tls)
    tls12 = client_context(ssl.TLSVersion.TLSv1_2)
    async with connected(port, "www.example.com", tls12) as (_, writer):
        ssl_object = writer.get_extra_info("ssl_object")
        assert ssl_object.version() == "TLSv1.2"
        assert ssl_object.cipher()[0].startswith("ECDHE-ECDSA-")
    cbc = client_context(ssl.TLSVersion.TLSv1_2)
    cbc.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        async with connected(port, "www.example.com", cbc):
            pass
    # a client that can only speak TLS 1.1 (this one does reach servers that allow it)
    tls11 = client_context(ssl.TLSVersion.MAXIMUM_SUPPORTED)
    tls11.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # setting TLS 1.1 is deprecated: the point
        tls11.minimum_version = tls11.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((ssl.SSLError, ConnectionError)):
        async with connected(port, "www.example.com", tls11):
            pass


# -- testssl -------------------------------------------------------------------------------------------

TESTSSL_TIMEOUT = 120.0
ALLOWED_CURVES = {"prime256v1", "secp384r1", "X25519"}


def find_testssl() -> str:
    found = shutil.which("testssl") or shutil.which("testssl.sh")
    if found:
        return found
    message = "testssl is not installed (apt-get install testssl.sh)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.mark.slow
async def test_testssl_finds_mozillas_intermediate_profile(listeners: list[Listener], tmp_path: Path) -> None:
    binary = find_testssl()
    tls = PublicTls()
    default = self_signed("default.example.net")  # ECDSA, the first: testssl's SNI must switch away
    www = self_signed("www.example.com", use_rsa=True)  # RSA: a server could offer RSA key exchange
    tls.update([default.entry, www.entry])
    port = await serve(listeners, tls)
    report = tmp_path / "testssl.json"
    process = await asyncio.create_subprocess_exec(
        binary, "--quiet", "--color", "0", "--warnings", "off", "--ip", "127.0.0.1",
        "--protocols", "--cipher-per-proto", "--fs", "--jsonfile", str(report), f"www.example.com:{port}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=tmp_path,
    )  # fmt: skip
    try:
        async with asyncio.timeout(TESTSSL_TIMEOUT):
            output, _ = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    findings: dict[str, str] = {}
    for entry in json.loads(report.read_text()):
        findings[entry["id"]] = entry["finding"]
    assert "scanTime" in findings, output.decode(errors="replace")

    # protocols: TLS 1.2 and 1.3 only
    for old in ("SSLv2", "SSLv3", "TLS1", "TLS1_1"):
        assert findings[old] == "not offered", old
    assert findings["TLS1_2"] == "offered"
    assert findings["TLS1_3"].startswith("offered")

    # suites: ECDHE with AEAD on 1.2, the AEAD suites on 1.3; no CBC, RSA key exchange, 3DES, RC4
    suites = {key: value.split() for key, value in findings.items() if key.startswith("cipher-tls")}
    tls12 = [fields[-1] for key, fields in suites.items() if key.startswith("cipher-tls1_2_")]
    tls13 = [fields[-1] for key, fields in suites.items() if key.startswith("cipher-tls1_3_")]
    assert tls12, "no TLS 1.2 suite found: the scan saw nothing"
    assert not [k for k in suites if not k.startswith(("cipher-tls1_2_", "cipher-tls1_3_"))]
    for name in tls12:
        assert name.startswith("TLS_ECDHE_RSA_WITH_"), name  # the RSA certificate, ECDHE key exchange
        assert name.endswith(("_GCM_SHA256", "_GCM_SHA384", "_CHACHA20_POLY1305_SHA256")), name
    assert set(tls13) <= {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
    for name in tls12 + tls13:
        for weak in ("CBC", "3DES", "RC4", "DES", "NULL", "EXPORT", "anon"):
            assert weak not in name, name

    # forward secrecy, with X25519, P-256 and P-384 only (no X448, no secp521r1, no finite-field DH)
    assert findings["PFS"] == "offered"
    curves = set(findings["PFS_ECDHE_curves"].split())
    assert curves, "no curve found"
    assert curves <= ALLOWED_CURVES, curves
    assert "DH_groups" not in findings
