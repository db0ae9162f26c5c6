"""The local proxy: an mTLS inbound listener in front of its service's instances on this host,
and the outbound listeners the host's apps call.

Inbound: while no instance is healthy, every TLS handshake is refused at its first step (the SNI
callback answers the ClientHello with a handshake_failure alert), so callers fail over to another
endpoint or zone at once instead of finding out after a handshake. Otherwise TLS is terminated
with the current certificate, the caller's certificate is verified (mesh roots, trust domain,
exactly one SPIFFE URI SAN; every authenticated mesh identity is allowed until authorization
policies exist), and only then is an instance reached: nothing that fails authentication ever
reaches a workload. An HTTP service's requests go through the HTTP engine (pooled keep-alive
connections to the instances, the caller's SPIFFE ID in ``X-Meshgate-Client-Identity``); a TCP
service's bytes are relayed.

Outbound: ``127.0.0.1:<port>`` per service, and optionally one HTTP listener (``meshOutbound``)
that routes by Host: ``http://<service>.mesh/`` reaches ``<service>``. Requests and connections
go over mTLS to the service's first locality group that accepts them (``ServiceUpstreams``), with
the SNI the endpoint names and the service's SPIFFE ID required of the server. An
``X-Meshgate-Client-Identity`` header an app sends is dropped: only the receiving proxy sets it.

Whether a listener speaks HTTP is decided per connection: the proxy configuration's ``protocol``
when set, else the Service's (the zone CP sends it with the service's cluster), else TCP.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
from pathlib import Path
from typing import Final, TextIO

from meshgate.pki.verify import VerifiedPeer
from meshgate.proxy.bridge import Bridge, Prepared
from meshgate.proxy.cluster import Cluster, Endpoint
from meshgate.proxy.http.access_log import AccessLog
from meshgate.proxy.http.options import HttpOptions
from meshgate.proxy.http.server import Site
from meshgate.proxy.http.upstreams import HttpUpstreams
from meshgate.proxy.identity import TlsIdentity
from meshgate.proxy.listener import Listener
from meshgate.proxy.stats import Stats
from meshgate.proxy.tls_listener import TlsListener
from meshgate.proxy.upstream import DEFAULT_ATTEMPTS, connect_cluster
from zones.config import HttpConfig, Instance, ProxyConfig
from zones.runtime import Runtime
from zones.upstreams import ServiceUpstreams

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT: Final = 10.0
CONNECT_TIMEOUT: Final = 5.0
MESH_SUFFIX: Final = b".mesh"


def http_options(config: HttpConfig) -> HttpOptions:
    return HttpOptions(
        header_timeout=config.header_timeout, request_timeout=config.request_timeout,
        idle_timeout=config.idle_timeout, upstream_timeout=config.upstream_timeout,
        connect_timeout=CONNECT_TIMEOUT,
    )  # fmt: skip


def open_access_log(config: HttpConfig) -> AccessLog | None:
    settings = config.access_log
    if settings is None:
        return None
    sink: TextIO = sys.stdout if settings.path == "-" else Path(settings.path).open("a", encoding="utf-8")  # noqa: SIM115
    return AccessLog(sink, sample=settings.sample, errors=settings.errors)


class LocalProxy:
    def __init__(self, config: ProxyConfig, tls: TlsIdentity, stats: Stats, zone: str = "") -> None:
        self.config = config
        self.tls = tls
        self.stats = stats
        self.zone = zone
        self.options = http_options(config.http)
        self.access_log = open_access_log(config.http)
        #: the protocol of each service as the zone CP last said
        self.protocols: dict[str, str] = {}
        self.instances = Cluster("instances", balancer="least_request", stats=stats.cluster("instances"))
        self.instances.update([])  # none healthy until the first health check says so
        self.inbound = TlsListener("inbound", self._inbound_protocol, tls, stats=stats.listener("inbound"))
        tls.admit = self._admit
        inbound_http = stats.http_stats("inbound", config.service)
        self.instances_http = HttpUpstreams(
            config.service, lambda: [self.instances], options=self.options, stats=inbound_http
        )
        self.inbound_site = Site(
            "inbound", lambda host: self.instances_http, options=self.options, stats=inbound_http,
            listener_stats=self.inbound.stats, access_log=self.access_log, zone=zone,
            upstreams=lambda: [self.instances_http], fixed=self.instances_http,
        )  # fmt: skip
        self.services: dict[str, ServiceUpstreams] = {}
        self.http_services: dict[str, HttpUpstreams] = {}
        self.outbounds: list[Listener] = []
        self.sites: list[Site] = [self.inbound_site]
        for outbound in config.outbounds:
            upstreams = self._service(outbound.service)
            name = f"outbound/{outbound.service}:{outbound.port}"
            site = Site(
                name, functools.partial(self._fixed_route, outbound.service), options=self.options,
                stats=stats.http_stats("outbound", outbound.service), listener_stats=stats.listener(name),
                access_log=self.access_log, zone=zone, upstreams=self._all_http,
                fixed=self.http_services[outbound.service],
            )  # fmt: skip
            self.sites.append(site)
            factory = functools.partial(self._outbound_protocol, upstreams, name, outbound.protocol, site)
            self.outbounds.append(Listener(name, factory, stats=stats.listener(name)))
        self.mesh_outbound: Listener | None = None
        if config.mesh_outbound is not None:
            name = "outbound/mesh"
            site = Site(
                name, self._mesh_route, options=self.options, stats=stats.http_stats("outbound", "-"),
                listener_stats=stats.listener(name), access_log=self.access_log, zone=zone,
                upstreams=self._all_http,
            )  # fmt: skip
            self.sites.append(site)
            self.mesh_outbound = Listener(name, site.protocol, stats=stats.listener(name))

    @property
    def listeners(self) -> list[Listener]:
        extra = [self.mesh_outbound] if self.mesh_outbound is not None else []
        return [self.inbound, *self.outbounds, *extra]

    async def start(self, *, reuse_port: bool) -> None:
        assert self.config.inbound is not None
        await self.inbound.start(self.config.inbound.address, self.config.inbound.port, reuse_port=reuse_port)
        for outbound, listener in zip(self.config.outbounds, self.outbounds, strict=True):
            await listener.start(outbound.address, outbound.port, reuse_port=reuse_port)
        if self.mesh_outbound is not None and self.config.mesh_outbound is not None:
            address = self.config.mesh_outbound
            await self.mesh_outbound.start(address.address, address.port, reuse_port=reuse_port)

    def drain(self) -> None:
        """Stop keep-alive on every HTTP connection (the process is stopping)."""
        for site in self.sites:
            site.drain()

    def stop(self) -> None:
        for site in self.sites:
            site.close()

    # -- updates ---------------------------------------------------------------------------------

    def set_health(self, healthy: dict[Instance, bool]) -> None:
        self.instances.update(
            Endpoint(i.address, i.port, zone=self.zone or None) for i, ok in healthy.items() if ok
        )

    def apply(self, runtime: Runtime) -> None:
        self.protocols = {name: cluster.protocol for name, cluster in runtime.clusters.items()}
        for service in runtime.clusters:
            self._service(service)
        for service, upstreams in self.services.items():
            upstreams.update(runtime.clusters.get(service))
            log.debug("service %s: zones %s", service, upstreams.zones)

    def _service(self, service: str) -> ServiceUpstreams:
        upstreams = self.services.get(service)
        if upstreams is None:
            upstreams = ServiceUpstreams(service, self.stats.cluster(service))
            self.services[service] = upstreams
            self.http_services[service] = HttpUpstreams(
                service, functools.partial(_clusters, upstreams), options=self.options,
                stats=self.stats.http_stats("outbound", service), tls=self.tls,
            )  # fmt: skip
        return upstreams

    def _all_http(self) -> list[HttpUpstreams]:
        return list(self.http_services.values())

    def _protocol(self, service: str, configured: str) -> str:
        return configured or self.protocols.get(service, "tcp")

    # -- routes ----------------------------------------------------------------------------------

    def _fixed_route(self, service: str, host: bytes) -> HttpUpstreams | None:
        return self.http_services.get(service)

    def _mesh_route(self, host: bytes) -> HttpUpstreams | None:
        """``<service>.mesh`` -> that service's upstreams (None: not a mesh service)."""
        if not host.endswith(MESH_SUFFIX):
            return None
        return self.http_services.get(host[: -len(MESH_SUFFIX)].decode("latin-1"))

    # -- connections -----------------------------------------------------------------------------

    def _inbound_protocol(self, peer: VerifiedPeer | None) -> asyncio.Protocol:
        log.debug("inbound connection from %s", peer.spiffe_id if peer else None)
        if self._protocol(self.config.service, self.config.protocol) == "http":
            return self.inbound_site.protocol(peer)
        return Bridge(self._inbound, self.inbound.stats, {})

    def _admit(self, server_name: str | None) -> bool:
        """Whether a handshake may go on: only while an instance is healthy (see the module doc)."""
        return bool(self.instances.available())

    async def _inbound(self, tls: asyncio.Transport, initial: bytes) -> Prepared:
        attempts = min(DEFAULT_ATTEMPTS, max(len(self.instances.endpoints), 1))
        upstream = await connect_cluster(self.instances, attempts=attempts, timeout=CONNECT_TIMEOUT)
        return tls, upstream, self.instances.stats

    def _outbound_protocol(
        self, upstreams: ServiceUpstreams, listener: str, protocol: str, site: Site, peer: VerifiedPeer | None
    ) -> asyncio.Protocol:
        if self._protocol(upstreams.service, protocol) == "http":
            return site.protocol(None)

        async def prepare(raw: asyncio.Transport, initial: bytes) -> Prepared:
            upstream = await upstreams.connect(self.tls, CONNECT_TIMEOUT)
            return raw, upstream, upstreams.stats

        return Bridge(prepare, self.stats.listener(listener), {})


def _clusters(upstreams: ServiceUpstreams) -> list[Cluster]:
    return [cluster for _, cluster in upstreams.groups]
