"""TLS for an edge's https ports: the certificate is chosen by SNI among the services served on
that port, from their ``Certificate`` documents; a client without SNI (or with a name no service
has) gets the first service's. Contexts come from ``meshgate.pki.tls.server_context``: TLS 1.2
and 1.3 only, ECDHE with AES-GCM or ChaCha20 on 1.2, groups X25519/P-256/P-384, no compression,
no renegotiation (Mozilla's "intermediate" profile). A new configuration swaps the contexts for
new handshakes; open connections keep theirs."""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from typing import Any

from meshgate.pki.tls import server_context

Certificates = Sequence[tuple[Sequence[str], bytes, bytes]]  # (hostnames, chain PEM, key PEM)


class PublicTls:
    def __init__(self) -> None:
        self._front: ssl.SSLContext | None = None
        self._default: ssl.SSLContext | None = None
        self._exact: dict[str, ssl.SSLContext] = {}
        self._wildcard: dict[str, ssl.SSLContext] = {}
        self._loaded: dict[tuple[bytes, bytes], ssl.SSLContext] = {}

    @property
    def ready(self) -> bool:
        return self._front is not None

    @property
    def context(self) -> ssl.SSLContext:
        """The listening socket's context (fixed); each handshake is switched to the right one."""
        if self._front is None:
            raise RuntimeError("no certificate yet")
        return self._front

    def update(self, certificates: Certificates) -> None:
        """Install ``certificates`` (all or nothing: a bad one raises and nothing changes)."""
        loaded: dict[tuple[bytes, bytes], ssl.SSLContext] = {}
        exact: dict[str, ssl.SSLContext] = {}
        wildcard: dict[str, ssl.SSLContext] = {}
        default: ssl.SSLContext | None = None
        for hostnames, chain, key in certificates:
            context = self._loaded.get((chain, key)) or loaded.get((chain, key))
            if context is None:
                context = server_context(chain, key)
            loaded[(chain, key)] = context
            default = default or context
            for name in hostnames:
                if name.startswith("*."):
                    wildcard.setdefault(name[1:], context)
                else:
                    exact.setdefault(name, context)
        self._loaded, self._exact, self._wildcard, self._default = loaded, exact, wildcard, default
        if default is not None and self._front is None:
            chain, key = next(iter(loaded))
            front = server_context(chain, key)
            front.sni_callback = self._select
            self._front = front

    def _select(self, ssl_object: Any, server_name: str | None, _context: ssl.SSLContext) -> int | None:
        chosen = None
        if server_name:
            name = server_name.lower()
            chosen = self._exact.get(name)
            if chosen is None and "." in name:
                chosen = self._wildcard.get(name[name.index(".") :])
        chosen = chosen or self._default
        if chosen is None:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        ssl_object.context = chosen
        return None
