"""The zone ingress: mTLS connections from other zones, routed by the SNI of their ClientHello
to a local proxy of the named service in this zone, without terminating TLS.

The ingress reads the first bytes of each connection until they hold a whole ClientHello
(``meshgate.proxy.clienthello``, no I/O), takes its server name, and accepts only
``<service>.<this zone>.svc.meshgate`` for a service it has a route for; anything else
(malformed or truncated hellos, no SNI, another form, an unknown service, nothing within the
timeout) is refused with a TCP reset and counted by reason. The bytes read go to the chosen local
proxy first and then the connection is relayed as is: the TLS session is the caller's and the
local proxy's (end-to-end identity), and the ingress never holds a decrypted byte.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Final

from meshgate.pki.verify import VerifiedPeer
from meshgate.proxy import clienthello
from meshgate.proxy.bridge import Prepared, Refused, Sniffing
from meshgate.proxy.cluster import Cluster, Endpoint
from meshgate.proxy.listener import Listener
from meshgate.proxy.stats import Stats
from meshgate.proxy.upstream import DEFAULT_ATTEMPTS, connect_cluster
from zones.config import ProxyConfig
from zones.runtime import Runtime

log = logging.getLogger(__name__)

CONNECT_TIMEOUT: Final = 5.0
HELLO_TIMEOUT: Final = 10.0


class Ingress:
    def __init__(self, config: ProxyConfig, zone: str, stats: Stats) -> None:
        self.config = config
        self.zone = zone
        self.stats = stats
        self._form = re.compile(
            r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\." + re.escape(zone) + r"\.svc\.meshgate"
        )
        self.routes: dict[str, Cluster] = {}
        self.listener = Listener("ingress", self._protocol, stats=stats.listener("ingress"))

    @property
    def listeners(self) -> list[Listener]:
        return [self.listener]

    async def start(self, *, reuse_port: bool) -> None:
        assert self.config.listen is not None
        await self.listener.start(self.config.listen.address, self.config.listen.port, reuse_port=reuse_port)

    def apply(self, runtime: Runtime) -> None:
        routes: dict[str, Cluster] = {}
        for sni, route in runtime.routes.items():
            cluster = self.routes.get(sni)
            if cluster is None:
                cluster = Cluster(
                    sni, balancer="least_request", stats=self.stats.cluster(f"ingress/{route.service}")
                )
            cluster.update(Endpoint(t.address, t.port, zone=self.zone) for t in route.endpoints)
            routes[sni] = cluster
        self.routes = routes

    # -- connections -----------------------------------------------------------------------------

    def _protocol(self, peer: VerifiedPeer | None) -> asyncio.Protocol:
        return Sniffing(self._decide, self._prepare, self.listener.stats, {}, HELLO_TIMEOUT)

    def _decide(self, data: bytes) -> str | None:
        """The routable server name once ``data`` holds a whole ClientHello (None before)."""
        try:
            hello = clienthello.parse(data)
        except clienthello.Malformed as exc:
            raise Refused("malformed_client_hello", str(exc)) from None
        if isinstance(hello, clienthello.NeedMore):
            return None
        if hello.server_name is None:
            raise Refused("no_sni", "the ClientHello names no server")
        if not self._form.fullmatch(hello.server_name):
            raise Refused("bad_sni", f"{hello.server_name!r} is not <service>.{self.zone}.svc.meshgate")
        return hello.server_name

    async def _prepare(self, raw: asyncio.Transport, initial: bytes, name: str) -> Prepared:
        cluster = self.routes.get(name)
        if cluster is None:
            raise Refused("unknown_service", f"no route for {name!r}")
        attempts = min(DEFAULT_ATTEMPTS, max(len(cluster.endpoints), 1))
        upstream = await connect_cluster(cluster, attempts=attempts, timeout=CONNECT_TIMEOUT)
        return raw, upstream, cluster.stats
