"""Talking to the global CP as a zone would, with key material from a real zone CP's data dir:
for tests of what the global CP refuses."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import aiohttp

from meshgate.clock import SystemClock
from meshgate.pki.identities import zone_cp_id
from meshgate.pki.keys import certificate_to_pem, new_private_key, private_key_to_pem
from meshgate.pki.leaf import issue_leaf
from meshgate.pki.tls import client_context
from zone_cp.identity import ZoneIdentity


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

    return asyncio.run(attempt())


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

    return asyncio.run(attempt())
