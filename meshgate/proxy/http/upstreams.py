"""Where an HTTP listener sends a service's requests: its clusters in order, and a pool of idle
keep-alive connections per endpoint.

``pick`` chooses an endpoint from the first cluster (locality group) that has one; ``idle``
returns a pooled connection to that endpoint when there is one (the fast path: no task, no
connect); ``connect`` opens a new one (TCP, or mTLS with the endpoint's SNI and expected SPIFFE
ID when the upstreams have a ``TlsIdentity``). Idle connections live ``pool_idle_timeout``
seconds, most recently used first, at most ``pool_max_idle`` per endpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

from meshgate.proxy.cluster import Cluster, Endpoint
from meshgate.proxy.http.client import HttpClient
from meshgate.proxy.http.metrics import HttpStats
from meshgate.proxy.http.options import HttpOptions
from meshgate.proxy.identity import TlsIdentity
from meshgate.proxy.relay import hand_over
from meshgate.proxy.upstream import connect


class HttpUpstreams:
    def __init__(
        self,
        name: str,
        clusters: Callable[[], Sequence[Cluster]],
        *,
        options: HttpOptions,
        stats: HttpStats,
        tls: TlsIdentity | None = None,
    ) -> None:
        self.name = name
        self.clusters = clusters
        self.options = options
        self.stats = stats
        self.tls = tls
        self.pools: dict[Endpoint, list[HttpClient]] = {}

    def pick(self, exclude: Collection[Endpoint] = ()) -> tuple[Cluster, Endpoint] | None:
        for cluster in self.clusters():
            endpoint = cluster.pick(exclude)
            if endpoint is not None:
                return cluster, endpoint
        return None

    def idle(self, endpoint: Endpoint) -> HttpClient | None:
        pool = self.pools.get(endpoint)
        while pool:
            client = pool.pop()
            if not client.lost and not client.transport.is_closing():
                return client
        return None

    def release(self, client: HttpClient, now: float) -> None:
        """Keep ``client`` for the next request to its endpoint (or close it: pool full)."""
        client.unbind()
        pool = client.pool
        if pool is None:
            pool = self.pools.get(client.endpoint)
            if pool is None:
                pool = self.pools[client.endpoint] = []
            client.pool = pool
        if len(pool) >= self.options.pool_max_idle or client.lost:
            client.transport.close()
            return
        client.idle_since = now
        pool.append(client)

    async def connect(self, cluster: Cluster, endpoint: Endpoint) -> HttpClient:
        """A new connection to ``endpoint`` (``UpstreamError`` when it cannot be made)."""
        upstream = await connect(
            endpoint, ssl=self.tls, timeout=self.options.connect_timeout, stats=cluster.stats
        )
        client = HttpClient(self, cluster, endpoint)
        transport = upstream.transport
        hand_over(transport, client)
        client.connection_made(transport)
        held = upstream.protocol
        if held.paused_reading:
            transport.resume_reading()
        if held.buffer or held.eof or held.lost:  # a server that spoke first, or is gone already
            client.lost = True
            transport.abort()
        return client

    def sweep(self, now: float) -> None:
        """Close pooled connections idle for longer than ``pool_idle_timeout``."""
        limit = now - self.options.pool_idle_timeout
        for pool in list(self.pools.values()):
            keep = []
            for client in pool:
                if client.lost:
                    continue
                if client.idle_since < limit:
                    client.transport.close()
                else:
                    keep.append(client)
            pool[:] = keep  # emptied, not dropped: idle clients' ``pool`` is this list

    def close(self) -> None:
        """Close every pooled connection (the upstreams are being replaced or stopped)."""
        for pool in self.pools.values():
            for client in pool:
                client.transport.close()
            pool.clear()

    @property
    def idle_connections(self) -> int:
        return sum(len(p) for p in self.pools.values())
