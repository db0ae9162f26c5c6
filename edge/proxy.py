"""The edge's data path: public listeners on the global services' VIPs and ports, forwarding to
the chosen zone's ingress over mTLS with the SNI naming the service in that zone.

- ``http``: the HTTP engine, routed by Host among the services on that address and port (no
  matching hostname: 404). ``https``: the same behind TLS terminated here, the certificate chosen
  by SNI among the services' ``Certificate`` documents (``PublicTls``).
- ``tcp`` and ``tls-passthrough``: bytes relayed (a passthrough client's TLS reaches the
  workload's own).
- Each service's zones are upstream groups in the order ``ZoneChooser`` gives (re-ranked after
  every probe round). A request goes to the first group with a usable ingress; a failed connect
  tries the next ingress, then the next zone (``retry.attempts`` in all); an idempotent request
  answered 502/503 by a zone goes once to the next zone, within the retry budget. Connect
  failures and 502/503 count against the zone in the ``ZoneBook`` (ejection after
  ``ejectAfter`` in a row).
- Responses carry ``X-Meshgate-Edge`` and ``X-Meshgate-Zone`` unless ``headers: false``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field

from edge.choice import ZoneBook, ZoneChooser, pick_first, usable
from edge.config import EdgeConfig
from edge.public_tls import PublicTls
from edge.runtime import EdgeRuntime, GlobalService, ServingZone
from meshgate.pki.spiffe import SpiffeId
from meshgate.pki.tls import TlsConfigError
from meshgate.pki.verify import VerifiedPeer
from meshgate.proxy.bridge import Bridge, Prepared
from meshgate.proxy.cluster import Cluster, Endpoint
from meshgate.proxy.http.access_log import AccessLog
from meshgate.proxy.http.retry_budget import RetryBudget
from meshgate.proxy.http.server import Site
from meshgate.proxy.http.upstreams import HttpUpstreams
from meshgate.proxy.identity import TlsIdentity
from meshgate.proxy.listener import Listener
from meshgate.proxy.stats import ClusterStats, ListenerStats, Stats
from meshgate.proxy.upstream import NoEndpointError, Upstream, connect_groups
from zones.local import CONNECT_TIMEOUT, http_options, open_access_log

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({502, 503})
#: what a bad Certificate document raises in ``PublicTls.update`` (an encrypted key: TlsConfigError)
CERTIFICATE_ERRORS = (ValueError, ssl.SSLError, TlsConfigError)
HTTP_PROTOCOLS = ("http", "https")


class ZoneCluster(Cluster):
    """A zone's ingresses; connection outcomes also count for or against the zone."""

    def __init__(self, book: ZoneBook, service: str, zone: str, stats: ClusterStats) -> None:
        super().__init__(f"{service}/{zone}", balancer="least_request", stats=stats)
        self.book, self.service, self.zone = book, service, zone

    def report(self, endpoint: Endpoint, ok: bool) -> None:
        """Failures count against the zone; a successful connect does not clear them (a zone
        that accepts connections and answers 503 to everything must still be ejected): only a
        successful probe brings an ejected zone back."""
        super().report(endpoint, ok)
        if not ok:
            self.book.request_failed(self.service, self.zone)


class ServiceRoute:
    """One global service at this edge: its zones as upstream groups, in the chooser's order."""

    def __init__(self, edge: EdgeProxy, service: GlobalService) -> None:
        self.edge = edge
        self.service = service
        self.stats = edge.stats.cluster(f"service/{service.name}")
        self.clusters: dict[str, ZoneCluster] = {}
        self.ranked: list[ServingZone] = []
        self.http = HttpUpstreams(
            service.name, self.groups, options=edge.options, stats=edge.stats.http_stats("edge", service.name),
            tls=edge.tls,
        )  # fmt: skip
        self.update(service)

    def update(self, service: GlobalService) -> None:
        self.service = service
        identity = SpiffeId.parse(service.identity)
        clusters = {}
        for zone in service.zones:
            cluster = self.clusters.get(zone.zone) or ZoneCluster(
                self.edge.book, service.name, zone.zone, self.stats
            )
            cluster.update(
                Endpoint(e.address, e.port, zone=zone.zone, sni=e.sni, identity=identity)
                for e in zone.endpoints
            )
            clusters[zone.zone] = cluster
        self.clusters = clusters
        self.rerank()

    def rerank(self) -> None:
        self.ranked = self.edge.chooser.order(self.service)

    def groups(self) -> list[Cluster]:
        """The upstream groups for the next request (weights applied; a zone ejected since the
        last ranking is skipped at once, not at the next probe round)."""
        health = self.edge.book.zones
        return [
            self.clusters[z.zone]
            for z in pick_first(self.ranked)
            if z.zone in self.clusters and usable(z, health.get((self.service.name, z.zone)))
        ]

    async def connect(self, tls: TlsIdentity) -> Upstream:
        return await connect_groups(
            self.groups(), ssl=tls, timeout=CONNECT_TIMEOUT, what=f"no zone can serve {self.service.name!r}"
        )

    def targets(self) -> dict[tuple[str, str], tuple[Endpoint, ...]]:
        return {(self.service.name, zone): cluster.endpoints for zone, cluster in self.clusters.items()}


@dataclass
class PublicListener:
    """One address and port the edge listens on, and the services it serves there."""

    address: str
    port: int
    protocol: str
    services: list[str] = field(default_factory=list)
    vips: set[str] = field(default_factory=set)
    listener: Listener | None = None
    site: Site | None = None
    tls: PublicTls | None = None
    error: str = ""


class EdgeProxy:
    def __init__(self, config: EdgeConfig, tls: TlsIdentity, stats: Stats, zone: str) -> None:
        self.config = config
        self.tls = tls
        self.stats = stats
        self.zone = zone
        self.options = dataclasses.replace(http_options(config.http), connect_attempts=config.retry.attempts)
        self.access_log: AccessLog | None = open_access_log(config.http)
        self.book = ZoneBook(config.probe.eject_after)
        self.chooser = ZoneChooser(self.book, hysteresis=config.choice.hysteresis, tie=config.choice.tie)
        self.budget = RetryBudget(ratio=config.retry.budget)
        self.routes: dict[str, ServiceRoute] = {}
        self.listeners: dict[tuple[str, int], PublicListener] = {}
        self.runtime = EdgeRuntime()
        self.draining = False

    # -- configuration ---------------------------------------------------------------------------

    def apply(self, runtime: EdgeRuntime) -> None:
        """Take a new configuration: routes now; listeners at the next ``reconcile``."""
        self.runtime = runtime
        for name in set(self.routes) - set(runtime.services):
            self.routes.pop(name).http.close()
        for name, service in runtime.services.items():
            route = self.routes.get(name)
            if route is None:
                self.routes[name] = ServiceRoute(self, service)
            else:
                route.update(service)

    def rerank(self) -> None:
        for route in self.routes.values():
            route.rerank()

    def targets(self) -> dict[tuple[str, str], tuple[Endpoint, ...]]:
        targets: dict[tuple[str, str], tuple[Endpoint, ...]] = {}
        for route in self.routes.values():
            targets.update(route.targets())
        return targets

    def _bind(self, vip: str, port: int) -> tuple[str, int]:
        override = self.config.listen
        return (vip, port) if override is None else (override.address, port + override.port_offset)

    def desired(self) -> dict[tuple[str, int], PublicListener]:
        wanted: dict[tuple[str, int], PublicListener] = {}
        for service in sorted(self.runtime.services.values(), key=lambda s: s.name):
            for port in service.ports:
                for vip in service.vips:
                    key = self._bind(vip, port.port)
                    entry = wanted.get(key)
                    if entry is None:
                        entry = wanted[key] = PublicListener(key[0], key[1], port.protocol)
                    elif entry.protocol != port.protocol or entry.protocol not in HTTP_PROTOCOLS:
                        log.warning(
                            "%s:%d is %s for %s already: %s is not served there",
                            key[0], key[1], entry.protocol, entry.services[0], service.name,
                        )  # fmt: skip
                        continue
                    if service.name not in entry.services:
                        entry.services.append(service.name)
                    entry.vips.add(vip)
        return wanted

    async def reconcile(self) -> None:
        """Listen where the configuration says (retrying what failed before); stop listening where
        it no longer does (open connections finish)."""
        wanted = self.desired()
        for key in set(self.listeners) - set(wanted):
            gone = self.listeners.pop(key)
            if gone.listener is not None:
                gone.listener.close()
            if gone.site is not None:
                gone.site.drain()
        for key, want in wanted.items():
            entry: PublicListener | None = self.listeners.get(key)
            if entry is not None and entry.protocol != want.protocol:
                if entry.listener is not None:
                    entry.listener.close()
                entry = None
            if entry is None:
                entry = self.listeners[key] = want
            else:
                entry.services, entry.vips = want.services, want.vips
            if entry.tls is not None and entry.listener is not None:
                try:
                    entry.tls.update(self._certificates(entry))
                except CERTIFICATE_ERRORS as exc:  # the certificates in use stay
                    log.warning("%s:%d: certificate refused, the previous one stays: %s", key[0], key[1], exc)
            if entry.listener is None:
                await self._start(entry)

    def _certificates(self, entry: PublicListener) -> list[tuple[tuple[str, ...], bytes, bytes]]:
        certs = []
        for name in entry.services:
            service = self.runtime.services[name]
            cert = self.runtime.certificates.get(service.certificate) if service.certificate else None
            if cert is not None:
                certs.append((service.hostnames, cert.chain_pem.encode(), cert.key_pem.encode()))
        return certs

    async def _start(self, entry: PublicListener) -> None:
        if entry.port > 65535:  # a public port + listen.portOffset (uvloop would bind it modulo 65536)
            entry.error = f"cannot listen: port {entry.port} is beyond 65535 (listen.portOffset too large)"
            return
        name = f"edge/{entry.address}:{entry.port}"
        listener_stats = self.stats.listener(name)
        tls: ssl.SSLContext | None = None
        if entry.protocol == "https":
            entry.tls = entry.tls or PublicTls()
            try:
                entry.tls.update(self._certificates(entry))
            except CERTIFICATE_ERRORS as exc:
                entry.error = f"certificate refused: {exc}"
                return
            if not entry.tls.ready:
                entry.error = "no certificate for this https port"
                return
            tls = entry.tls.context
        if entry.protocol in HTTP_PROTOCOLS:
            headers = [("x-meshgate-edge", self.config.name)] if self.config.headers else []
            site = Site(
                name, functools.partial(self._route_http, entry), options=self.options,
                stats=self.stats.http_stats("edge", "-"), listener_stats=listener_stats,
                access_log=self.access_log, scheme=entry.protocol, zone=self.zone, trust_forwarded=False,
                response_headers=headers, upstreams=self._all_http, retry_statuses=RETRY_STATUSES,
                retry_budget=self.budget, zone_header=self.config.headers,
            )  # fmt: skip
            if self.draining:
                site.drain()
            entry.site = site
            listener = Listener(name, site.protocol, tls=tls, stats=listener_stats)
        else:
            listener = Listener(
                name, functools.partial(self._l4, entry, listener_stats), stats=listener_stats
            )
        try:
            await listener.start(entry.address, entry.port)
        except OSError as exc:
            entry.error = f"cannot listen: {exc.strerror or exc}"
            entry.site = None
            return
        entry.listener, entry.error = listener, ""

    def _all_http(self) -> list[HttpUpstreams]:
        return [route.http for route in self.routes.values()]

    def _route_http(self, entry: PublicListener, host: bytes) -> HttpUpstreams | None:
        name = host.decode("latin-1")
        for service_name in entry.services:
            route = self.routes.get(service_name)
            if route is not None and _host_matches(name, route.service.hostnames):
                return route.http
        return None

    def _l4(self, entry: PublicListener, stats: ListenerStats, peer: VerifiedPeer | None) -> asyncio.Protocol:
        route = self.routes.get(entry.services[0]) if entry.services else None

        async def prepare(raw: asyncio.Transport, initial: bytes) -> Prepared:
            if route is None:
                raise NoEndpointError("the service is gone", endpoint="", kind="no_endpoint")
            return raw, await route.connect(self.tls), route.stats

        return Bridge(prepare, stats, {})

    # -- state -----------------------------------------------------------------------------------

    def vip_listeners(self) -> dict[str, list[PublicListener]]:
        by_vip: dict[str, list[PublicListener]] = {}
        for entry in self.listeners.values():
            for vip in entry.vips:
                by_vip.setdefault(vip, []).append(entry)
        return by_vip

    @property
    def open_connections(self) -> int:
        return sum(e.listener.open_connections for e in self.listeners.values() if e.listener is not None)

    def drain(self) -> None:
        """End keep-alive on every client connection (responses carry ``Connection: close``)."""
        self.draining = True
        for site in self._sites():
            site.drain()

    def undrain(self) -> None:
        self.draining = False
        for site in self._sites():
            site.draining = False

    def _sites(self) -> Iterable[Site]:
        return (e.site for e in self.listeners.values() if e.site is not None)

    def close_listeners(self) -> list[Listener]:
        listeners = [e.listener for e in self.listeners.values() if e.listener is not None]
        for listener in listeners:
            listener.close()
        return listeners

    def stop(self) -> None:
        for site in self._sites():
            site.close()


def _host_matches(host: str, hostnames: Iterable[str]) -> bool:
    for pattern in hostnames:
        if pattern == host:
            return True
        if pattern.startswith("*.") and host.endswith(pattern[1:]) and host.count(".") == pattern.count("."):
            return True
    return False
