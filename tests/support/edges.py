"""A two-zone mesh with edges, for edge tests: real processes, started once per module.

Zones ``one`` and ``two`` (one CP each), each with an ingress, a local proxy ``web-<zone>`` in
front of its own recording HTTP workload, and a local proxy ``tcp-<zone>`` in front of a TCP
greeter (it answers with its name). The global services: ``web`` (http and https on its VIP,
hostname ``web.example.com``, zones [one, two]) and ``greet`` (tcp).

Every ingress is reached through a ``FaultProxy`` (the edge's view of the zone): the ingress
listens on ``ingress_host`` and advertises the fault proxy's address, so a test adds delay,
resets or stalls between the edges and a zone. Edges are ``meshgate edge run`` processes,
optionally inside a network namespace.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshgate.pki.keys import certificate_to_pem, private_key_to_pem
from tests.support.factories import doc
from tests.support.http_workload import HttpWorkload
from tests.support.processes import MESHGATE, Admin, GlobalCPProcess, ManagedProcess, ZoneCPProcess, wait_for
from tests.support.proxies import ProxyProcess, parse_metrics
from tests.support.workloads import Workload

HEALTH = {"type": "tcp", "interval": 0.3, "timeout": 0.5, "rise": 1, "fall": 2}
ZONES = ("one", "two")
LOCATIONS = {"one": (50.1, 8.7), "two": (48.9, 2.4)}  # Frankfurt, Paris
HOSTNAME = "web.example.com"


class EdgeProcess(ManagedProcess):
    """``meshgate edge run``, optionally in a network namespace (``netns``)."""

    what = "edge"

    def __init__(
        self, data_dir: Path, zone_cp_url: str, config: dict[str, Any], *, token: str | None = None,
        netns: str | None = None, admin_port: int,
    ) -> None:  # fmt: skip
        super().__init__(data_dir, "edge.log")
        self.zone_cp_url = zone_cp_url
        self.admin_port = admin_port
        self.config = {"admin": f"127.0.0.1:{admin_port}", **config}
        self.token = token
        self.netns = netns

    @property
    def name(self) -> str:
        return str(self.config["name"])

    def start(self, timeout: float = 30, *, wait_ready: bool = True) -> EdgeProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config_file = self.data_dir / "edge.json"
        config_file.write_text(json.dumps(self.config))
        args = [*MESHGATE, "edge", "run", "--zone-cp", self.zone_cp_url, "--data-dir", str(self.data_dir),
                "--config", str(config_file), "--log-level", "debug"]  # fmt: skip
        if self.token is not None:
            token_file = self.data_dir / "token"
            token_file.write_text(self.token)
            args += ["--token-file", str(token_file)]
        if self.netns is not None:
            args = ["ip", "netns", "exec", self.netns, *args]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=log, start_new_session=True)
        if wait_ready:
            wait_for(self.ready, timeout, f"edge {self.name} ready ({self.log})")
        return self

    def ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"edge {self.name} exited with {self.proc.returncode}: {self.tail()}")
        return self.admin("/readyz")[0] == 200

    def admin(self, path: str) -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.admin_port}{path}"
        if self.netns is not None:
            done = subprocess.run(
                ["ip", "netns", "exec", self.netns, "curl", "-s", "-o", "-", "-w", "\n%{http_code}", url],
                capture_output=True, text=True, timeout=10, check=False,
            )  # fmt: skip
            body, _, code = done.stdout.rpartition("\n")
            return int(code or 0), body
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def status(self) -> dict[str, Any]:
        code, body = self.admin("/status")
        assert code == 200, body
        result: dict[str, Any] = json.loads(body)
        return result

    def metrics(self) -> dict[str, float]:
        code, text = self.admin("/metrics")
        assert code == 200, text
        return parse_metrics(text)

    def sigkill(self) -> None:
        """SIGKILL the controller alone (not its process group): ExaBGP must follow by itself."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)  # `ip netns exec` exec()s the edge: the same PID
        self.proc.wait()


@dataclass
class Zone:
    name: str
    cp: ZoneCPProcess
    web: HttpWorkload
    greeter: Workload
    ingress: ProxyProcess
    fault: Any  # the FaultProxy between the edges and this zone's ingress
    proxies: dict[str, ProxyProcess] = field(default_factory=dict)


@dataclass
class EdgeMesh:
    root: Path
    cp: GlobalCPProcess
    admin: Admin
    zones: dict[str, Zone] = field(default_factory=dict)
    edges: dict[str, EdgeProcess] = field(default_factory=dict)
    ca_pem: bytes = b""
    ports: dict[str, int] = field(default_factory=dict)  # the global services' public ports

    def stop(self) -> None:
        for edge in self.edges.values():
            edge.kill()
        for zone in self.zones.values():
            for proxy in [*zone.proxies.values(), zone.ingress]:
                proxy.kill()
            zone.cp.kill()
            zone.web.stop()
            zone.greeter.stop()
            if zone.fault is not None:
                zone.fault.stop()
        self.cp.kill()


def public_certificate(hostnames: Sequence[str]) -> tuple[bytes, bytes, bytes]:
    """A CA, and a server chain and key for ``hostnames`` it signed (PEM): what an operator
    stores in a tls Secret."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edge test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hostnames]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    return certificate_to_pem(ca), certificate_to_pem(leaf), private_key_to_pem(key)


def global_services(vip: str, ports: dict[str, int], tls_secret: str) -> list[dict[str, Any]]:
    return [
        doc("GlobalService", "web", {
            "service": "web", "hostnames": [HOSTNAME], "vips": [vip], "certificateRef": tls_secret,
            "ports": [{"name": "http", "port": ports["http"], "protocol": "http", "targetPort": "http"},
                      {"name": "https", "port": ports["https"], "protocol": "https", "targetPort": "http"}],
            "zones": [{"zone": "one"}, {"zone": "two"}],
        }),
        doc("GlobalService", "greet", {
            "service": "greet", "vips": [vip],
            "ports": [{"name": "tcp", "port": ports["tcp"], "protocol": "tcp", "targetPort": "tcp"}],
            "zones": [{"zone": "one"}, {"zone": "two"}],
        }),
    ]  # fmt: skip


def base_resources(ca: bytes, chain: bytes, key: bytes) -> list[dict[str, Any]]:
    return [
        *(doc("Zone", z, {"region": z, "location": {"latitude": LOCATIONS[z][0], "longitude": LOCATIONS[z][1]}})
          for z in ZONES),
        doc("Service", "web", {"ports": [{"name": "http", "port": 8080, "protocol": "http"}]}),
        doc("Service", "greet", {"ports": [{"name": "tcp", "port": 9000, "protocol": "tcp"}]}),
        doc("Secret", "web-tls", {"type": "tls", "zones": ["*"],
                                  "data": {"tls.crt": (chain + ca).decode(), "tls.key": key.decode()}}),
    ]  # fmt: skip


def build_mesh(
    root: Path,
    *,
    vip: str,
    ports: dict[str, int],
    listen_port: Any,
    fault_proxy: Any,
    ingress_host: str = "127.0.0.2",
    fault_host: str = "127.0.0.3",
    zone_cp_host: str = "127.0.0.1",
    advertise_host: str | None = None,
) -> EdgeMesh:
    """Start the global CP, both zones (CP, workloads, local proxies, ingress, fault proxy) and
    apply the global services. ``fault_proxy(listen, target)`` makes and starts a fault proxy;
    ``listen_port()`` gives a free port."""
    cp = GlobalCPProcess(root / "global").start()
    admin = Admin(cp)
    ca, chain, key = public_certificate([HOSTNAME])
    mesh = EdgeMesh(root, cp, admin, ca_pem=ca, ports=ports)
    try:
        admin.apply(*base_resources(ca, chain, key), *global_services(vip, ports, "web-tls"))
        for name in ZONES:
            zone_cp = ZoneCPProcess(
                root / f"zone-{name}", name, cp.zone_url, admin.token("zone", name), proxy_host=zone_cp_host
            ).start()
            web = HttpWorkload(f"web-{name}").start()
            greeter = Workload(f"greet-{name}").start()
            port = listen_port()
            fault = fault_proxy((fault_host, port), (ingress_host, port))
            ingress = ProxyProcess(
                root / f"ingress-{name}", "ingress", zone_cp.proxy_url,
                {"name": f"ingress-{name}",
                 "listen": {"address": ingress_host, "port": port, "advertise": advertise_host or fault_host}},
                token=admin.token("ingress", name),
            )  # fmt: skip
            zone = Zone(name, zone_cp, web, greeter, ingress, fault)
            mesh.zones[name] = zone
            ingress.start(wait_ready=False)
            token = admin.token("proxy", name, reusable=True)
            for service, workload in (("web", web.port), ("greet", greeter.port)):
                proxy = ProxyProcess(
                    root / f"{service}-{name}", "local", zone_cp.proxy_url,
                    {"name": f"{service}-{name}", "service": service,
                     "inbound": {"address": "127.0.0.1", "port": listen_port()},
                     "instances": [{"address": "127.0.0.1", "port": workload}], "health": HEALTH},
                    token=token,
                )  # fmt: skip
                zone.proxies[service] = proxy.start(wait_ready=False)
        for zone in mesh.zones.values():
            for proxy in [zone.ingress, *zone.proxies.values()]:
                wait_for(proxy.ready, 30, f"proxy {proxy.name} ready ({proxy.log})")
        return mesh
    except BaseException:
        mesh.stop()
        raise


def edge_config(name: str, **extra: Any) -> dict[str, Any]:
    """Fast probes and announcements for tests."""
    return {
        "name": name,
        "probe": {"interval": 0.25, "timeout": 1.0, "ejectAfter": 2},
        "announce": {"interval": 0.25, "rise": 2, "fall": 3},
        "drain": {"threshold": 0, "deadline": 10},
        **extra,
    }
