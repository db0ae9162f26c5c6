"""A TLS server identity issued by one of our CAs for a control plane's own listener, renewed
in place (new handshakes get the new certificate; the context object stays the same)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from meshgate.lifecycle import OwnedTask
from meshgate.pki.ca import CertificateAuthority
from meshgate.pki.keys import certificate_to_pem, new_private_key, private_key_to_pem
from meshgate.pki.leaf import issue_leaf
from meshgate.pki.spiffe import SpiffeId
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


class ServingIdentity:
    def __init__(
        self,
        ca: CertificateAuthority,
        spiffe_id: SpiffeId,
        now: Callable[[], datetime],
        names: Sequence[str] = (),
        ttl: timedelta = timedelta(days=30),
        *,
        client_ca_pem: bytes | None = None,
    ) -> None:
        self.ca, self._id, self._now, self._ttl = ca, spiffe_id, now, ttl
        self._dns, self._ips = split_sans(names)
        chain, key = self._issue()
        root = certificate_to_pem(ca.root)
        self.context: ssl.SSLContext = server_context(
            chain, key, client_ca_pem=client_ca_pem or root, require_client_cert=False
        )
        self._task = OwnedTask(f"renew-{spiffe_id}")

    def _issue(self) -> tuple[bytes, bytes]:
        key = new_private_key()
        leaf = issue_leaf(
            self.ca, key.public_key(), spiffe_id=self._id, now=self._now(), ttl=self._ttl,
            dns_names=self._dns, ip_addresses=self._ips, server=True, client=False,
        )  # fmt: skip
        return self.ca.presented_chain_pem(leaf), private_key_to_pem(key)

    async def start(self) -> None:
        self._task.start(self._rotate())

    async def stop(self) -> None:
        await self._task.stop()

    async def _rotate(self) -> None:
        while True:
            await asyncio.sleep(self._ttl.total_seconds() / 3)
            load_identity(self.context, *self._issue())
            log.info("serving certificate renewed", extra={"identity": str(self._id)})
