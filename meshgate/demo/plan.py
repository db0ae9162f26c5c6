"""What the demo runs, where, and on which ports: names, directories, command lines and the
proxies' and edges' own configuration files. No I/O beyond finding free ports.

Per zone: a zone CP, an ingress, ``WORKLOADS_PER_ZONE`` workloads each behind a local proxy, and an
edge serving the global services' public ports + its ``portOffset`` on loopback (no BGP: that
needs root and a router). The control planes pick their own ports (port 0) and report them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshgate.demo.ports import PortPicker
from meshgate.demo.resources import PUBLIC_PORTS, SERVICE, ZONES, edge_name

WORKLOADS_PER_ZONE = 2
DRAIN_SECONDS = 2.0  # proxies and edges: what open connections get when the demo stops
# Every zone is on this machine: probed RTTs differ by noise only, so differences below 50 ms
# count as ties and the nearest zone by location (its own) serves; no hysteresis holds a zone
# chosen while the own one was not yet up.
ZONE_CHOICE = {"hysteresis": 0.0, "tie": 0.05}
HEALTH = {"type": "http", "path": "/_meshgate/healthz", "interval": 0.5, "timeout": 1.0, "rise": 1, "fall": 2}


@dataclass(frozen=True)
class LocalProxy:
    zone: str
    name: str  # the proxy's (its Dataplane is <zone>.<name>)
    workload: str  # the workload's instance name, in its answers
    workload_port: int
    inbound_port: int
    admin_port: int


@dataclass(frozen=True)
class Ingress:
    zone: str
    name: str
    port: int
    admin_port: int


@dataclass(frozen=True)
class Edge:
    zone: str
    name: str
    admin_port: int
    offset: int

    @property
    def http_port(self) -> int:
        return PUBLIC_PORTS["http"] + self.offset

    @property
    def https_port(self) -> int:
        return PUBLIC_PORTS["https"] + self.offset


@dataclass(frozen=True)
class Plan:
    root: Path
    host: str
    proxies: tuple[LocalProxy, ...]
    ingresses: tuple[Ingress, ...]
    edges: tuple[Edge, ...]

    @classmethod
    def make(cls, root: Path, picker: PortPicker) -> Plan:
        proxies, ingresses, edges = [], [], []
        for zone in ZONES:
            for i in range(1, WORKLOADS_PER_ZONE + 1):
                proxies.append(
                    LocalProxy(zone, f"{SERVICE}-{i}", f"{SERVICE}-{zone}-{i}", picker.port(), picker.port(), picker.port())
                )  # fmt: skip
            ingresses.append(Ingress(zone, f"ingress-{zone}", picker.port(), picker.port()))
            edges.append(Edge(zone, edge_name(zone), picker.port(), picker.offset(PUBLIC_PORTS.values())))
        return cls(root, picker.host, tuple(proxies), tuple(ingresses), tuple(edges))

    # -- where things go ---------------------------------------------------------------------------

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def global_dir(self) -> Path:
        return self.root / "global-cp"

    @property
    def admin_token(self) -> Path:
        return self.global_dir / "admin-token"

    @property
    def ca_file(self) -> Path:
        return self.root / "demo-ca.pem"

    def zone_dir(self, zone: str, part: str) -> Path:
        return self.root / "zones" / zone / part

    def edge_dir(self, edge: Edge) -> Path:
        return self.root / "edges" / edge.name

    # -- command lines -----------------------------------------------------------------------------

    def global_cp(self) -> list[str]:
        d = self.global_dir
        return ["global-cp", "run", "--data-dir", str(d), "--listen", f"{self.host}:0",
                "--address-file", str(d / "address"), "--zone-listen", f"{self.host}:0",
                "--zone-address-file", str(d / "zone-address")]  # fmt: skip

    def zone_cp(self, zone: str, global_zone_url: str, token_file: Path) -> list[str]:
        d = self.zone_dir(zone, "cp")
        return ["zone-cp", "run", "--zone", zone, "--global", global_zone_url, "--data-dir", str(d),
                "--token-file", str(token_file), "--listen", f"{self.host}:0",
                "--address-file", str(d / "address"), "--proxy-listen", f"{self.host}:0",
                "--proxy-address-file", str(d / "proxy-address")]  # fmt: skip

    def workload(self, proxy: LocalProxy) -> list[str]:
        return ["workload", "run", "--listen", f"{self.host}:{proxy.workload_port}", "--name", proxy.workload,
                "--zone", proxy.zone]  # fmt: skip

    def proxy(self, role: str, data_dir: Path, zone_cp_url: str, token_file: Path) -> list[str]:
        return ["proxy", "run", "--role", role, "--zone-cp", zone_cp_url, "--data-dir", str(data_dir),
                "--config", str(data_dir / "proxy.json"), "--token-file", str(token_file),
                "--drain-timeout", str(DRAIN_SECONDS)]  # fmt: skip

    def edge(self, edge: Edge, zone_cp_url: str, token_file: Path) -> list[str]:
        d = self.edge_dir(edge)
        return ["edge", "run", "--zone-cp", zone_cp_url, "--data-dir", str(d), "--config", str(d / "edge.json"),
                "--token-file", str(token_file)]  # fmt: skip

    # -- the proxies' and edges' own configuration -------------------------------------------------

    def local_proxy_config(self, proxy: LocalProxy) -> dict[str, Any]:
        return {
            "name": proxy.name,
            "service": SERVICE,
            "inbound": {"address": self.host, "port": proxy.inbound_port},
            "instances": [{"address": self.host, "port": proxy.workload_port}],
            "health": HEALTH,
            "admin": f"{self.host}:{proxy.admin_port}",
        }

    def ingress_config(self, ingress: Ingress) -> dict[str, Any]:
        return {
            "name": ingress.name,
            "listen": {"address": self.host, "port": ingress.port},
            "admin": f"{self.host}:{ingress.admin_port}",
        }

    def edge_config(self, edge: Edge) -> dict[str, Any]:
        return {
            "name": edge.name,
            "admin": f"{self.host}:{edge.admin_port}",
            "listen": {"address": self.host, "portOffset": edge.offset},
            "probe": {"interval": 0.5, "timeout": 1.0, "ejectAfter": 3},
            "zoneChoice": ZONE_CHOICE,
            "drain": {"threshold": 0, "deadline": DRAIN_SECONDS},
            "bgp": {"enabled": False},
        }
