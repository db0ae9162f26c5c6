"""A proxy's link to its zone CP: its configuration stream (it is the sink), its registration,
and its certificate renewals. All of it reconnects by itself; none of it is needed to keep
serving, since the last good configuration and certificate are on disk."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from datetime import datetime
from typing import Any

from meshgate.lifecycle import OwnedTask
from meshgate.pki.keys import certificate_from_pem, certificates_from_pem
from meshgate.sync.backoff import Backoff
from meshgate.sync.messages import Hello, ProtocolError
from meshgate.sync.runner import Closed, run_sink
from meshgate.sync.sink import Change, Rejected, SinkSession
from meshgate.sync.versions import content_version
from zones.enroll import EnrollError, ZoneCP, check_zone_cp, mtls_context, open_channel, renew, request
from zones.runtime import BadConfig, build
from zones.state import Identity, ProxyState

log = logging.getLogger(__name__)


class Link:
    def __init__(
        self, zone_cp: ZoneCP, state: ProxyState, identity: Identity, documents: dict[str, dict[str, Any]],
        version: int, on_config: Callable[[Any], None], on_identity: Callable[[Identity], None],
        cert_ttl: float | None, registration: Callable[[], list[dict[str, Any]]],
        builder: Callable[[int, dict[str, dict[str, Any]]], Any] = build,
    ) -> None:  # fmt: skip
        self.zone_cp, self.state, self.identity = zone_cp, state, identity
        self.documents, self.version = documents, version
        self._on_config, self._on_identity = on_config, on_identity
        self._cert_ttl, self._registration = cert_ttl, registration
        #: documents -> the role's runtime (BadConfig refuses the update); edges have their own
        self._build = builder
        self.connected = False
        self.last_nack = ""
        self._sync = OwnedTask("config-stream")
        self._renewal = OwnedTask("certificate-renewal")
        self._register_task = OwnedTask("registration")
        self._register_kick = asyncio.Event()
        self._context: tuple[Identity, ssl.SSLContext] | None = None

    async def start(self) -> None:
        self._sync.start(self._keep_syncing())
        self._renewal.start(self._keep_renewing())
        self._register_task.start(self._keep_registered())

    async def stop(self) -> None:
        for task in (self._register_task, self._renewal, self._sync):
            await task.stop()

    def registration_changed(self) -> None:
        self._register_kick.set()

    def _mtls(self) -> ssl.SSLContext:
        """The client context for the zone CP, built once per identity: loading a certificate and
        its key takes milliseconds of the event loop, and an edge re-registers its status after
        every probe round."""
        if self._context is None or self._context[0] is not self.identity:
            self._context = (self.identity, mtls_context(self.identity))
        return self._context[1]

    # -- configuration ---------------------------------------------------------------------

    async def _apply(self, change: Change) -> None:
        documents = dict(self.documents)
        for upsert in change.upserts:
            documents[upsert.key] = upsert.doc
        for key in change.removals:
            documents.pop(key, None)
        try:
            runtime = self._build(change.version, documents)
        except BadConfig as exc:
            self.last_nack = str(exc)
            log.warning("refused a configuration: %s", exc)
            raise Rejected(f"configuration refused, nothing applied: {exc}") from None
        try:
            self.state.save_config(change.version, documents)
        except OSError as exc:
            raise Rejected(f"cannot persist the configuration: {exc}") from None
        self.documents, self.version = documents, change.version
        self._on_config(runtime)

    async def _keep_syncing(self) -> None:
        backoff = Backoff(0.2, 10.0)
        while True:
            try:
                channel = await open_channel(self.zone_cp, self._mtls())
                check_zone_cp(channel, _roots(self.identity), self.identity.trust_domain, self.identity.zone)
                await channel.send('{"type":"sync"}')
                self.connected = True
                backoff.reset()
                self._register_kick.set()  # a reconnect re-registers (the zone CP may have lost it)
                known = {k: content_version(d) for k, d in self.documents.items()}
                await run_sink(channel, SinkSession(self._apply), Hello(known, self.version))
            except (EnrollError, Closed, ProtocolError, OSError) as exc:
                log.log(logging.INFO if self.connected else logging.DEBUG, "config stream: %s", exc)
            finally:
                self.connected = False
            await asyncio.sleep(backoff.next())

    # -- registration ----------------------------------------------------------------------

    async def _keep_registered(self) -> None:
        backoff = Backoff(0.2, 10.0)
        while True:
            await self._register_kick.wait()
            self._register_kick.clear()
            try:
                for resource in self._registration():
                    channel = await open_channel(self.zone_cp, self._mtls())
                    await request(channel, {"type": "register", "resource": resource})
                backoff.reset()
            except EnrollError as exc:
                log.info("registration: %s; retrying", exc)
                await asyncio.sleep(backoff.next())
                self._register_kick.set()

    # -- certificate -----------------------------------------------------------------------

    async def _keep_renewing(self) -> None:
        backoff = Backoff(0.2, 10.0)
        received = _now_ts()
        while True:
            await asyncio.sleep(max(0.0, _renew_at(self.identity, received) - _now_ts()))
            try:
                fresh = await renew(self.zone_cp, self.identity, self._cert_ttl)
            except EnrollError as exc:
                log.warning("certificate renewal: %s; retrying", exc)
                await asyncio.sleep(backoff.next())
                continue
            backoff.reset()
            received = _now_ts()
            self.identity = fresh
            with contextlib.suppress(OSError):
                self.state.save_identity(fresh)
            self._on_identity(fresh)
            log.info("certificate renewed", extra={"not_after": fresh.not_after})


def _roots(identity: Identity) -> list[Any]:
    return [certificate_from_pem(pem.encode()) for pem in identity.roots_pem]


def _now_ts() -> float:
    return datetime.now().timestamp()


def _renew_at(identity: Identity, received: float) -> float:
    """Two thirds into the certificate's life as we have it: from when it was received (its
    notBefore is backdated for clock skew) to its notAfter."""
    leaf = certificates_from_pem(identity.chain_pem.encode())[0]
    start = max(leaf.not_valid_before_utc.timestamp(), received)
    end = leaf.not_valid_after_utc.timestamp()
    return start + max(end - start, 0.0) * 2 / 3
