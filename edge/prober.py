"""Active probes from the edge to every zone ingress of every global service it serves.

Each round, every (service, zone) target's ingresses are probed at once: a TCP connect and an
mTLS handshake with the SNI naming the service in that zone, through the ingress (which passes
it through) to a local proxy of the service, whose certificate must carry the service's SPIFFE
ID. So a successful probe proves the whole path to a proxy with a healthy instance behind it (a
local proxy refuses handshakes while none of its instances is healthy). The time the handshake
took is the probe's RTT (a TLS 1.3 handshake is two round trips through the ingress); the best
ingress of the zone counts. Results go to the ``ZoneBook``; ``on_round`` is called after each
round.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from edge.choice import ZoneBook
from meshgate.lifecycle import OwnedTask
from meshgate.proxy.cluster import Endpoint
from meshgate.proxy.identity import TlsIdentity
from meshgate.proxy.upstream import UpstreamError, connect

log = logging.getLogger(__name__)

Targets = dict[tuple[str, str], tuple[Endpoint, ...]]  # (service name, zone) -> its ingresses


class Prober:
    def __init__(
        self, tls: TlsIdentity, book: ZoneBook, *, interval: float = 1.0, timeout: float = 2.0,
        on_round: Callable[[], None] | None = None,
    ) -> None:  # fmt: skip
        self.tls = tls
        self.book = book
        self.interval = interval
        self.timeout = timeout
        self.on_round = on_round
        self.targets: Targets = {}
        self.rounds = 0
        self._task = OwnedTask("zone-probes")
        self._wake = asyncio.Event()

    def set_targets(self, targets: Targets) -> None:
        if targets != self.targets:
            self.targets = targets
            self.book.forget(set(targets))
            self._wake.set()  # probe new targets now, not at the next interval

    async def start(self) -> None:
        self._task.start(self._run())

    async def stop(self) -> None:
        await self._task.stop()

    async def probe_once(self) -> None:
        targets = dict(self.targets)
        results = await asyncio.gather(*(self._probe_zone(eps) for eps in targets.values()))
        for key, (rtt, error) in zip(targets, results, strict=True):
            if key in self.targets:
                self.book.probed(*key, rtt, error)
        self.rounds += 1
        if self.on_round is not None:
            self.on_round()

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.probe_once()
            except Exception:  # a bug here must not stop the probes (nor the announcements they drive)
                log.exception("probe round failed")
            self._wake.clear()
            remaining = self.interval - (time.monotonic() - started)
            if remaining > 0:
                try:
                    async with asyncio.timeout(remaining):
                        await self._wake.wait()
                except TimeoutError:
                    pass

    async def _probe_zone(self, endpoints: tuple[Endpoint, ...]) -> tuple[float | None, str]:
        results = await asyncio.gather(*(self._probe(e) for e in endpoints))
        rtts = [rtt for rtt, _ in results if rtt is not None]
        if rtts:
            return min(rtts), ""
        return None, next((error for _, error in results if error), "no ingress")

    async def _probe(self, endpoint: Endpoint) -> tuple[float | None, str]:
        started = time.monotonic()
        try:
            upstream = await connect(endpoint, ssl=self.tls, timeout=self.timeout)
        except UpstreamError as exc:
            return None, f"{endpoint} ({endpoint.sni}): {exc}"
        elapsed = time.monotonic() - started
        upstream.close()  # nothing was sent: the local proxy sees a connection closed cleanly
        return elapsed, ""
