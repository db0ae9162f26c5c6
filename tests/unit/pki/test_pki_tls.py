"""TLS contexts: real handshakes, probed with the openssl binary against a server process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

import meshgate
from meshgate.pki.ca import CertificateAuthority, create_root_ca
from meshgate.pki.keys import certificate_from_pem, certificate_to_pem, private_key_to_pem
from meshgate.pki.openssl_ffi import TlsConfigError, set_groups
from meshgate.pki.tls import client_context, peer_certificates, server_context
from meshgate.pki.verify import VerificationError, VerifiedPeer, verify_peer
from tests.unit.pki.pki_certs import TD, leaf_for, zone_authority

SERVER_SCRIPT = Path(__file__).with_name("pki_tls_server.py")
REPO = Path(meshgate.__file__).resolve().parents[1]


def _now() -> datetime:
    # Certificates here meet real TLS stacks, which read the wall clock: issue them for it.
    return datetime.now(UTC)


@pytest.fixture
def live_root() -> CertificateAuthority:
    return create_root_ca(TD, mesh="default", now=_now())


def _zone(root: CertificateAuthority, zone: str) -> CertificateAuthority:
    return zone_authority(root, zone, now=_now())


def _identity(issuer: CertificateAuthority, spiffe_id: str, **kwargs: object) -> tuple[bytes, bytes]:
    """(chain PEM as sent, key PEM) for a leaf of ``spiffe_id``."""
    leaf, key = leaf_for(issuer, spiffe_id, now=_now(), **kwargs)
    return issuer.presented_chain_pem(leaf), private_key_to_pem(key)


# --- context settings --------------------------------------------------------------------------


def test_tls12_ciphers_are_ecdhe_with_aead_only(live_root: CertificateAuthority) -> None:
    chain, key = _identity(live_root, f"spiffe://{TD}/svc/api")
    for context in (
        server_context(chain, key),
        client_context(live_root.certificate_pem()),
    ):
        names = [c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"]
        assert names
        for name in names:
            assert name.startswith("ECDHE-"), name
            assert "GCM" in name or "CHACHA20" in name, name
        assert context.minimum_version == ssl.TLSVersion.TLSv1_2
        assert context.options & ssl.OP_NO_COMPRESSION
        assert context.options & ssl.OP_NO_RENEGOTIATION


def test_set_groups_reports_a_list_openssl_refuses() -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with pytest.raises(TlsConfigError, match="refused the group list"):
        set_groups(context, "X25519:NOT-A-GROUP")
    set_groups(context, "X25519:P-256:P-384")


def test_server_context_requires_client_ca_for_mtls(live_root: CertificateAuthority) -> None:
    chain, key = _identity(live_root, f"spiffe://{TD}/svc/api")
    with pytest.raises(ValueError, match="needs client_ca_pem"):
        server_context(chain, key, require_client_cert=True)
    assert server_context(chain, key).verify_mode == ssl.CERT_NONE
    optional = server_context(chain, key, client_ca_pem=live_root.certificate_pem())
    assert optional.verify_mode == ssl.CERT_OPTIONAL


def test_encrypted_keys_fail_instead_of_prompting(live_root: CertificateAuthority) -> None:
    leaf, key = leaf_for(live_root, f"spiffe://{TD}/svc/api", now=_now())
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    with pytest.raises(TlsConfigError, match="encrypted private keys"):
        server_context(certificate_to_pem(leaf), encrypted)


def test_client_context_refuses_a_cert_without_key(live_root: CertificateAuthority) -> None:
    chain, _ = _identity(live_root, f"spiffe://{TD}/svc/api")
    with pytest.raises(ValueError, match="go together"):
        client_context(live_root.certificate_pem(), cert_chain_pem=chain)


def test_no_key_material_left_on_disk(
    live_root: CertificateAuthority, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chain, key = _identity(live_root, f"spiffe://{TD}/svc/api")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)
    monkeypatch.delattr(os, "memfd_create", raising=False)  # take the temp-file path
    server_context(chain, key)
    assert list(tmp_path.iterdir()) == []


# --- openssl s_client probes against a server process ----------------------------------------

ProbeServer = Callable[[str], int]


@pytest.fixture
def probe_env(tmp_path: Path) -> dict[str, str]:
    """No system OpenSSL policy: a refusal must come from our context, not from openssl.cnf."""
    conf = tmp_path / "openssl.cnf"
    conf.write_text("")
    env = dict(os.environ)
    env["OPENSSL_CONF"] = str(conf)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


@pytest.fixture
def start_server(
    live_root: CertificateAuthority, tmp_path: Path, probe_env: dict[str, str]
) -> Iterator[ProbeServer]:
    chain, key = _identity(live_root, f"spiffe://{TD}/svc/api")
    (tmp_path / "chain.pem").write_bytes(chain)
    (tmp_path / "key.pem").write_bytes(key)
    (tmp_path / "key.pem").chmod(0o600)
    procs: list[subprocess.Popen[bytes]] = []

    def start(mode: str) -> int:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(SERVER_SCRIPT),
                str(tmp_path / "chain.pem"),
                str(tmp_path / "key.pem"),
                mode,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=probe_env,
        )
        procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip().isdigit(), f"server did not start: {line!r}"
        return int(line)

    yield start
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.close()  # the server exits on stdin EOF
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def s_client(port: int, options: list[str], env: dict[str, str]) -> tuple[bool, str]:
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *options],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    output = result.stdout + result.stderr
    established = result.returncode == 0 and "Cipher is (NONE)" not in output
    return established, output


REFUSED_PROBES = {
    "tls1.1": (["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"], "Protocol  : TLSv1.1"),
    "cbc": (["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA"], "ECDHE-ECDSA-AES128-SHA"),
    "x448": (["-groups", "X448"], "Server Temp Key: X448"),
}


@pytest.mark.parametrize("probe", sorted(REFUSED_PROBES))
def test_probe_refused_by_our_server_accepted_by_a_permissive_one(
    start_server: ProbeServer, probe_env: dict[str, str], probe: str
) -> None:
    options, accepted_marker = REFUSED_PROBES[probe]
    ok, output = s_client(start_server("permissive"), options, probe_env)
    assert ok, output  # the probe itself can succeed: the refusal below is our doing
    assert accepted_marker in output
    ok, output = s_client(start_server("hardened"), options, probe_env)
    assert not ok, output
    assert "alert" in output


@pytest.mark.parametrize(
    ("options", "marker"),
    [
        (["-groups", "X25519"], "Server Temp Key: X25519"),
        (["-groups", "P-256"], "Server Temp Key: ECDH, prime256v1"),
        (["-groups", "P-384"], "Server Temp Key: ECDH, secp384r1"),
        (["-tls1_2", "-groups", "X25519:P-256"], "Cipher is ECDHE-ECDSA-"),
        (["-tls1_3"], "Cipher is TLS_"),
    ],
)
def test_probe_accepted(
    start_server: ProbeServer, probe_env: dict[str, str], options: list[str], marker: str
) -> None:
    ok, output = s_client(start_server("hardened"), options, probe_env)
    assert ok, output
    assert marker in output


def test_server_skips_x448_when_the_client_prefers_it(
    start_server: ProbeServer, probe_env: dict[str, str]
) -> None:
    ok, output = s_client(start_server("hardened"), ["-groups", "X448:P-256"], probe_env)
    assert ok, output
    assert "Server Temp Key: ECDH, prime256v1" in output


# --- mTLS round trip ------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _identity_server(server_ctx: ssl.SSLContext, trusted: list[x509.Certificate]) -> AsyncIterator[int]:
    """An asyncio TLS server that reads each client's identity with verify_peer and answers
    with it (or with why it refused); yields its port."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            chain = peer_certificates(writer.get_extra_info("ssl_object"))
            peer = verify_peer(chain, trusted, trust_domain=TD, now=_now(), usage="client")
            answer = f"{peer.spiffe_id} zone={peer.issuer_zone}".encode()
        except VerificationError as exc:
            answer = f"refused: {exc}".encode()
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def _read_all(tls: ssl.SSLSocket) -> bytes:
    data = b""
    while chunk := tls.recv(4096):
        data += chunk
    return data


async def _mtls_round_trip(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, roots: list[bytes]
) -> tuple[bytes, VerifiedPeer]:
    """One connection; the client (blocking socket in a thread) checks the server's identity
    with verify_peer too."""
    trusted = [certificate_from_pem(pem) for pem in roots]

    async with _identity_server(server_ctx, trusted) as port:

        def client() -> tuple[bytes, VerifiedPeer]:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
                client_ctx.wrap_socket(raw, server_hostname="ingress.eu.svc.meshgate") as tls,
            ):
                peer = verify_peer(
                    peer_certificates(tls), trusted, trust_domain=TD, now=_now(), usage="server"
                )
                return _read_all(tls), peer

        return await asyncio.wait_for(asyncio.to_thread(client), timeout=20)


async def test_mtls_round_trip_reads_spiffe_ids_both_ways(live_root: CertificateAuthority) -> None:
    eu, us = _zone(live_root, "eu"), _zone(live_root, "us")
    server_chain, server_key = _identity(eu, f"spiffe://{TD}/zone/eu/ingress/in-1")
    client_chain, client_key = _identity(us, f"spiffe://{TD}/svc/api")
    root_pem = live_root.certificate_pem()
    server_ctx = server_context(server_chain, server_key, client_ca_pem=root_pem, require_client_cert=True)
    client_ctx = client_context(
        root_pem, cert_chain_pem=client_chain, key_pem=client_key, server_hostname_check=False
    )
    answer, server_peer = await _mtls_round_trip(server_ctx, client_ctx, [root_pem])
    assert answer == f"spiffe://{TD}/svc/api zone=us".encode()
    assert str(server_peer.spiffe_id) == f"spiffe://{TD}/zone/eu/ingress/in-1"
    assert server_peer.issuer_zone == "eu"


async def _assert_handshake_refused(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, roots: list[bytes]
) -> None:
    """The server never answers: the client sees an alert, a reset, or the connection closed
    before any data (asyncio may close without flushing the TLS 1.3 alert)."""
    try:
        answer, _ = await _mtls_round_trip(server_ctx, client_ctx, roots)
    except (ssl.SSLError, ConnectionError):
        return
    assert answer == b""


async def test_mtls_server_refuses_a_client_from_another_root(
    live_root: CertificateAuthority,
) -> None:
    stranger = create_root_ca(TD, mesh="other", now=_now())
    server_chain, server_key = _identity(live_root, f"spiffe://{TD}/svc/db")
    client_chain, client_key = _identity(stranger, f"spiffe://{TD}/svc/api")
    server_ctx = server_context(
        server_chain,
        server_key,
        client_ca_pem=live_root.certificate_pem(),
        require_client_cert=True,
    )
    client_ctx = client_context(
        live_root.certificate_pem(),
        cert_chain_pem=client_chain,
        key_pem=client_key,
        server_hostname_check=False,
    )
    await _assert_handshake_refused(server_ctx, client_ctx, [live_root.certificate_pem()])


async def test_mtls_server_refuses_a_client_without_certificate(
    live_root: CertificateAuthority,
) -> None:
    server_chain, server_key = _identity(live_root, f"spiffe://{TD}/svc/db")
    server_ctx = server_context(
        server_chain,
        server_key,
        client_ca_pem=live_root.certificate_pem(),
        require_client_cert=True,
    )
    client_ctx = client_context(live_root.certificate_pem(), server_hostname_check=False)
    await _assert_handshake_refused(server_ctx, client_ctx, [live_root.certificate_pem()])


async def test_identity_rules_apply_after_the_handshake(live_root: CertificateAuthority) -> None:
    # OpenSSL accepts the chain (same root); verify_peer refuses the zone rule breach
    eu, us = _zone(live_root, "eu"), _zone(live_root, "us")
    server_chain, server_key = _identity(eu, f"spiffe://{TD}/zone/eu/cp")
    client_chain, client_key = _identity(us, f"spiffe://{TD}/zone/eu/edge/e1")
    root_pem = live_root.certificate_pem()
    server_ctx = server_context(server_chain, server_key, client_ca_pem=root_pem, require_client_cert=True)
    client_ctx = client_context(
        root_pem, cert_chain_pem=client_chain, key_pem=client_key, server_hostname_check=False
    )
    answer, _ = await _mtls_round_trip(server_ctx, client_ctx, [root_pem])
    assert answer.startswith(b"refused: ")
    assert b"scoped to zone 'eu'" in answer


async def test_hostname_check_uses_dns_sans(live_root: CertificateAuthority) -> None:
    server_chain, server_key = _identity(
        live_root, f"spiffe://{TD}/svc/api", dns_names=["ingress.eu.svc.meshgate"]
    )
    client_chain, client_key = _identity(live_root, f"spiffe://{TD}/svc/web")
    root_pem = live_root.certificate_pem()
    server_ctx = server_context(server_chain, server_key, client_ca_pem=root_pem, require_client_cert=True)
    checking = client_context(root_pem, cert_chain_pem=client_chain, key_pem=client_key)
    answer, _ = await _mtls_round_trip(server_ctx, checking, [root_pem])
    assert answer == f"spiffe://{TD}/svc/web zone=None".encode()

    other_chain, other_key = _identity(live_root, f"spiffe://{TD}/svc/api", dns_names=["other.svc.meshgate"])
    other_ctx = server_context(other_chain, other_key, client_ca_pem=root_pem, require_client_cert=True)
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        await _mtls_round_trip(other_ctx, checking, [root_pem])


async def test_a_resumed_session_still_shows_the_client_chain(
    live_root: CertificateAuthority,
) -> None:
    eu, us = _zone(live_root, "eu"), _zone(live_root, "us")
    server_chain, server_key = _identity(eu, f"spiffe://{TD}/zone/eu/ingress/in-1")
    client_chain, client_key = _identity(us, f"spiffe://{TD}/svc/api")
    root_pem = live_root.certificate_pem()
    server_ctx = server_context(server_chain, server_key, client_ca_pem=root_pem, require_client_cert=True)
    client_ctx = client_context(
        root_pem, cert_chain_pem=client_chain, key_pem=client_key, server_hostname_check=False
    )
    client_ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # Python resumes TLS 1.2 reliably

    async with _identity_server(server_ctx, [live_root.certificate]) as port:

        def client() -> list[tuple[bool, bytes]]:
            results = []
            session = None
            for _ in range(3):
                with (
                    socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
                    client_ctx.wrap_socket(raw, server_hostname="x", session=session) as tls,
                ):
                    results.append((tls.session_reused, _read_all(tls)))
                    session = tls.session
            return results

        results = await asyncio.wait_for(asyncio.to_thread(client), timeout=20)
    assert [reused for reused, _ in results] == [False, True, True]
    assert {answer for _, answer in results} == {f"spiffe://{TD}/svc/api zone=us".encode()}
