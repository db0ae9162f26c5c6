"""Where a local proxy sends a service's connections: locality groups, each a ``Cluster``.

The zone CP sends each service as ordered groups (healthy local-zone endpoints first, then the
ingresses of the other zones with healthy instances, nearest first). A connection goes to the
first group that accepts it: a group whose endpoints all fail to connect (refused, reset, wrong
identity) hands over to the next one at once, without waiting for a new configuration. Each
group's endpoints keep their passive-ejection state across configuration updates.
"""

from __future__ import annotations

from meshgate.pki.spiffe import SpiffeId
from meshgate.proxy.cluster import Cluster, Endpoint
from meshgate.proxy.identity import TlsIdentity
from meshgate.proxy.stats import ClusterStats
from meshgate.proxy.upstream import Upstream, connect_groups
from zones.runtime import ClusterConfig


class ServiceUpstreams:
    def __init__(self, service: str, stats: ClusterStats, balancer: str = "least_request") -> None:
        self.service = service
        self.stats = stats
        self._balancer = balancer
        self.groups: list[tuple[str, Cluster]] = []

    def update(self, config: ClusterConfig | None) -> None:
        """Take the service's groups from a new configuration (None: the service is gone)."""
        if config is None:
            self.groups = []
            return
        identity = SpiffeId.parse(config.identity)
        previous = dict(self.groups)
        groups: list[tuple[str, Cluster]] = []
        for group in config.groups:
            endpoints = [
                Endpoint(t.address, t.port, zone=group.zone, sni=t.sni or None, identity=identity)
                for t in group.endpoints
            ]
            if not endpoints or any(zone == group.zone for zone, _ in groups):
                continue
            cluster = previous.get(group.zone)
            if cluster is None:
                cluster = Cluster(f"{self.service}/{group.zone}", balancer=self._balancer, stats=self.stats)
            cluster.update(endpoints)
            groups.append((group.zone, cluster))
        self.groups = groups

    @property
    def zones(self) -> list[str]:
        """The groups' zones, in the order they are tried."""
        return [zone for zone, _ in self.groups]

    async def connect(self, tls: TlsIdentity, timeout: float) -> Upstream:
        """An mTLS connection to the service, from the first group that accepts one."""
        return await connect_groups(
            [cluster for _, cluster in self.groups], ssl=tls, timeout=timeout,
            what=f"no zone has a healthy instance of {self.service!r}",
        )  # fmt: skip
