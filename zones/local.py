"""The local proxy: an mTLS inbound listener in front of its service's instances on this host,
and one plain outbound listener per service the host's apps call.

Inbound: while no instance is healthy, every TLS handshake is refused at its first step (the SNI
callback answers the ClientHello with a handshake_failure alert), so callers fail over to another
endpoint or zone at once instead of finding out after a handshake. Otherwise TLS is terminated
with the current certificate, the caller's certificate is verified (mesh roots, trust domain, exactly one SPIFFE URI SAN; every authenticated mesh
identity is allowed until authorization policies exist), and only then is an instance connected:
nothing that fails authentication ever reaches a workload.

Outbound: ``127.0.0.1:<port>`` per service; each connection goes over mTLS to the service's
first locality group that accepts it (``ServiceUpstreams``), with the SNI the endpoint names and
the service's SPIFFE ID required of the server.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Final

from meshgate.pki.verify import VerifiedPeer
from meshgate.proxy.bridge import Bridge, Prepared
from meshgate.proxy.cluster import Cluster, Endpoint
from meshgate.proxy.identity import TlsIdentity
from meshgate.proxy.listener import Listener
from meshgate.proxy.stats import Stats
from meshgate.proxy.tls_listener import TlsListener
from meshgate.proxy.upstream import DEFAULT_ATTEMPTS, connect_cluster
from zones.config import Instance, ProxyConfig
from zones.runtime import Runtime
from zones.upstreams import ServiceUpstreams

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT: Final = 10.0
CONNECT_TIMEOUT: Final = 5.0


class LocalProxy:
    def __init__(self, config: ProxyConfig, tls: TlsIdentity, stats: Stats) -> None:
        self.config = config
        self.tls = tls
        self.stats = stats
        self.instances = Cluster("instances", balancer="least_request", stats=stats.cluster("instances"))
        self.instances.update([])  # none healthy until the first health check says so
        self.inbound = TlsListener("inbound", self._inbound_protocol, tls, stats=stats.listener("inbound"))
        tls.admit = self._admit
        self.services: dict[str, ServiceUpstreams] = {}
        self.outbounds: list[Listener] = []
        for outbound in config.outbounds:
            upstreams = self.services.get(outbound.service)
            if upstreams is None:
                upstreams = ServiceUpstreams(outbound.service, stats.cluster(outbound.service))
                self.services[outbound.service] = upstreams
            name = f"outbound/{outbound.service}:{outbound.port}"
            factory = functools.partial(self._outbound_protocol, upstreams, name)
            self.outbounds.append(Listener(name, factory, stats=stats.listener(name)))

    @property
    def listeners(self) -> list[Listener]:
        return [self.inbound, *self.outbounds]

    async def start(self, *, reuse_port: bool) -> None:
        assert self.config.inbound is not None
        await self.inbound.start(self.config.inbound.address, self.config.inbound.port, reuse_port=reuse_port)
        for outbound, listener in zip(self.config.outbounds, self.outbounds, strict=True):
            await listener.start(outbound.address, outbound.port, reuse_port=reuse_port)

    # -- updates ---------------------------------------------------------------------------------

    def set_health(self, healthy: dict[Instance, bool]) -> None:
        self.instances.update(Endpoint(i.address, i.port) for i, ok in healthy.items() if ok)

    def apply(self, runtime: Runtime) -> None:
        for service, upstreams in self.services.items():
            upstreams.update(runtime.clusters.get(service))
            log.debug("service %s: zones %s", service, upstreams.zones)

    # -- connections -----------------------------------------------------------------------------

    def _inbound_protocol(self, peer: VerifiedPeer | None) -> asyncio.Protocol:
        log.debug("inbound connection from %s", peer.spiffe_id if peer else None)
        return Bridge(self._inbound, self.inbound.stats, {})

    def _admit(self, server_name: str | None) -> bool:
        """Whether a handshake may go on: only while an instance is healthy (see the module doc)."""
        return bool(self.instances.available())

    async def _inbound(self, tls: asyncio.Transport, initial: bytes) -> Prepared:
        attempts = min(DEFAULT_ATTEMPTS, max(len(self.instances.endpoints), 1))
        upstream = await connect_cluster(self.instances, attempts=attempts, timeout=CONNECT_TIMEOUT)
        return tls, upstream, self.instances.stats

    def _outbound_protocol(
        self, upstreams: ServiceUpstreams, listener: str, peer: VerifiedPeer | None
    ) -> asyncio.Protocol:
        async def prepare(raw: asyncio.Transport, initial: bytes) -> Prepared:
            upstream = await upstreams.connect(self.tls, CONNECT_TIMEOUT)
            return raw, upstream, upstreams.stats

        return Bridge(prepare, self.stats.listener(listener), {})
