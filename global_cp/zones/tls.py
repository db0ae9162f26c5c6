"""The zone-facing listener's certificate: issued by the default mesh's root CA for the
global CP's own identity, so a zone that knows only the CA fingerprint (from its join token)
can verify the server on first contact. Re-issued before it expires, without a restart."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
from collections.abc import Sequence
from datetime import timedelta

from meshgate.clock import Clock
from meshgate.lifecycle import OwnedTask
from meshgate.pki.ca import CertificateAuthority
from meshgate.pki.identities import global_cp_id
from meshgate.pki.keys import certificate_to_pem, new_private_key, private_key_to_pem
from meshgate.pki.leaf import issue_leaf
from meshgate.pki.tls import load_identity, server_context

log = logging.getLogger(__name__)


def split_sans(names: Sequence[str]) -> tuple[list[str], list[str]]:
    dns, ips = [], []
    for name in dict.fromkeys(names):
        try:
            ips.append(str(ipaddress.ip_address(name)))
        except ValueError:
            dns.append(name)
    return dns, ips


class ZoneFacingTLS:
    def __init__(
        self,
        ca: CertificateAuthority,
        clock: Clock,
        names: Sequence[str],
        ttl: timedelta = timedelta(days=30),
    ) -> None:
        self.ca = ca
        self._clock = clock
        self._dns, self._ips = split_sans(names)
        self._ttl = ttl
        chain, key = self._issue()
        self.context: ssl.SSLContext = server_context(
            chain, key, client_ca_pem=certificate_to_pem(ca.certificate), require_client_cert=False
        )
        self._task = OwnedTask("zone-tls-rotation")

    def _issue(self) -> tuple[bytes, bytes]:
        key = new_private_key()
        leaf = issue_leaf(
            self.ca,
            key.public_key(),
            spiffe_id=global_cp_id(self.ca.trust_domain),
            now=self._clock.now(),
            ttl=self._ttl,
            dns_names=self._dns,
            ip_addresses=self._ips,
            server=True,
            client=False,
        )
        return certificate_to_pem(leaf), private_key_to_pem(key)

    async def start(self) -> None:
        self._task.start(self._rotate())

    async def stop(self) -> None:
        await self._task.stop()

    async def _rotate(self) -> None:
        while True:
            await asyncio.sleep(self._ttl.total_seconds() / 3)
            load_identity(self.context, *self._issue())
            log.info("zone-facing certificate renewed")
