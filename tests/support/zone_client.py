"""Talking to the global CP as a zone would, with key material from a real zone CP's data dir:
for tests of what the global CP refuses."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import aiohttp

from meshgate.clock import SystemClock
from meshgate.pki.ca import CertificateAuthority, create_root_ca, issue_intermediate
from meshgate.pki.identities import zone_cp_id
from meshgate.pki.keys import certificate_to_pem, make_csr, new_private_key, private_key_to_pem
from meshgate.pki.leaf import issue_leaf
from meshgate.pki.tls import client_context, load_identity
from zone_cp.identity import ZoneIdentity

T = TypeVar("T")


def _context(data_dir: Path, zone: str, claim_zone: str):  # type: ignore[no-untyped-def]
    identity = ZoneIdentity.load(data_dir / "pki", zone, now=SystemClock().now(), ttl=timedelta(hours=1))
    assert identity is not None, f"no identity in {data_dir}"
    key = new_private_key()
    leaf = issue_leaf(
        identity.intermediate,
        key.public_key(),
        spiffe_id=zone_cp_id(identity.trust_domain, claim_zone),
        now=SystemClock().now(),
        server=False,
        client=True,
    )
    return client_context(
        certificate_to_pem(identity.root),
        cert_chain_pem=identity.intermediate.presented_chain_pem(leaf),
        key_pem=private_key_to_pem(key),
    )


def _run(attempt: Callable[[], Awaitable[T]]) -> T:
    """Run one attempt on a fresh loop, closed only after aiohttp's TLS transports are: its docs
    ("Graceful Shutdown") ask for a short pause after the session closes, else the loop's end
    finds the transport still open and Python reports it as leaked."""

    async def main() -> T:
        try:
            return await attempt()
        finally:
            await asyncio.sleep(0.25)

    return asyncio.run(main())


def connect_as(data_dir: Path, zone: str, *, claim_zone: str, url: str) -> int:
    """Open the global→zone stream with a certificate naming ``claim_zone``, issued by ``zone``'s
    intermediate. Returns 101 if the upgrade was accepted, else the refusal's HTTP status."""

    async def attempt() -> int:
        async with aiohttp.ClientSession() as session:
            try:
                async with session.ws_connect(
                    f"{url}/sync/v1/global-to-zone", ssl=_context(data_dir, zone, claim_zone)
                ):
                    return 101
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status

    return _run(attempt)


def send_as(data_dir: Path, zone: str, url: str, message: str) -> tuple[int, str]:
    """As ``zone`` on the zone→global stream: wait for the global CP's hello, send ``message``,
    and return the close code and reason the global CP answers with."""

    async def attempt() -> tuple[int, str]:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"{url}/sync/v1/zone-to-global", ssl=_context(data_dir, zone, zone)) as ws,
        ):
            hello = await ws.receive(timeout=10)
            assert hello.type == aiohttp.WSMsgType.TEXT, hello
            await ws.send_str(message)
            closing = await ws.receive(timeout=10)
            return int(ws.close_code or 0), str(closing.extra or "")

    return _run(attempt)


def connect_from_elsewhere(url: str, zone: str) -> str:
    """A zone CP certificate from another installation (its own root, another trust domain):
    returns how the connection failed ("" if it did not)."""
    now = SystemClock().now()
    root = create_root_ca("elsewhere.example", mesh="default", now=now)
    key = new_private_key()
    intermediate = issue_intermediate(
        root,
        make_csr(key, "spiffe://elsewhere.example"),
        zone=zone,
        trust_domain="elsewhere.example",
        now=now,
    )
    ca = CertificateAuthority(intermediate, key, (root.certificate,))
    leaf_key = new_private_key()
    leaf = issue_leaf(ca, leaf_key.public_key(), spiffe_id=zone_cp_id("elsewhere.example", zone), now=now,
                      server=False, client=True)  # fmt: skip
    # It trusts the real global CP (it got the CA from somewhere) but presents its own chain.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    load_identity(context, ca.presented_chain_pem(leaf), private_key_to_pem(leaf_key))

    async def attempt() -> str:
        async with aiohttp.ClientSession() as session:
            try:
                async with session.ws_connect(f"{url}/sync/v1/global-to-zone", ssl=context):
                    return ""
            except aiohttp.WSServerHandshakeError as exc:
                return f"HTTP {exc.status}"
            except (aiohttp.ClientError, OSError) as exc:
                return f"TLS: {exc}"

    return _run(attempt)
