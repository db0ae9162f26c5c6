"""Starting what the ``mesh`` and ``latency`` benchmarks measure: nginx, the meshgate mesh path and
the HAProxy chain, each process owned by PID (``bench.harness.Owned``) and pinned as asked.

The meshgate path is the real thing, configured the way ``meshgate demo`` configures it (its plan,
command lines, proxy and edge configuration files, resources and certificate come from
``meshgate.demo``), reduced to one zone: a global CP on SQLite, the zone CP of ``eu-west``
enrolled with a join token, then that zone's ingress (``meshgate proxy run --role ingress``), one
local proxy (``meshgate proxy run --role local``) whose one instance is nginx, and the zone's edge
(``meshgate edge run``) serving the ``web`` GlobalService's https port on loopback (``listen
{address, portOffset}``, no BGP). The edge's only zone is its own, whose only endpoint the zone
CP gives it is the zone's ingress: requests go edge -> ingress -> local proxy -> nginx, which
``start`` checks (the response names the zone, and the ingress accepted the edge's connection).
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from bench.harness import CpuSplit, Owned, cpu_list, say
from bench.http_setup import BODY, nginx_argv
from bench.l4_setup import LOCALHOST, Proc, free_ports, listening, wait_until
from bench.mesh_setup import (
    EDGE_NAME,
    HAPROXY_HOPS,
    ZONE,
    HaproxyPorts,
    Tls,
    haproxy_argv,
    haproxy_configs,
    listener_accepted,
    nginx_tls_config,
    parse_metrics,
)
from meshgate.demo.launcher import MESHGATE
from meshgate.demo.plan import Edge, Ingress, LocalProxy, Plan
from meshgate.demo.ports import PortPicker
from meshgate.demo.resources import HOSTNAME, PUBLIC_PORTS, SERVICE, documents
from meshgate.files import write_secret_file

START_TIMEOUT: Final = 60.0
MESH_HOPS: Final = ("edge", "ingress", "local")
TOKEN_ROLES: Final = ("zone", "ingress", "proxy", "edge")


@dataclass(frozen=True)
class Pinning(CpuSplit):
    """Which CPUs the load (load generator, nginx, the control planes and the bench) and the six
    proxy processes run on; None: wherever the scheduler puts them."""

    def describe(self, load: str) -> str:
        if self.load is None or self.proxies is None:
            return "no pinning: every process runs wherever the scheduler puts it"
        return (
            f"{load}, nginx, the global and zone CPs (idle during rounds) and the bench on CPU "
            f"{cpu_list(self.load)}; the three proxies of both chains on CPU {cpu_list(self.proxies)} (they "
            "share it, so a chain's figures are what one core of proxying carries; one chain is "
            "loaded at a time)"
        )


@dataclass
class Bed:
    """Everything started: where each chain is entered, its proxy processes by hop."""

    nginx: Proc
    nginx_port: int
    nginx_tls_port: int
    mesh_port: int  # the edge's https port
    haproxy_port: int  # HAProxy 1's
    mesh: dict[str, Proc] = field(default_factory=dict)  # edge, ingress, local
    haproxy: dict[str, Proc] = field(default_factory=dict)  # edge, ingress, local
    control: dict[str, Proc] = field(default_factory=dict)  # global-cp, zone-cp
    mesh_admin: dict[str, str] = field(default_factory=dict)  # hop -> http://host:port
    haproxy_logs: dict[str, Path] = field(default_factory=dict)

    def chain(self, name: str) -> dict[str, Proc]:
        return self.mesh if name == "meshgate" else self.haproxy

    def entry_port(self, name: str) -> int:
        return {"meshgate": self.mesh_port, "haproxy": self.haproxy_port, "direct": self.nginx_tls_port}[name]

    def all_procs(self) -> dict[str, Proc]:
        procs = {"nginx": self.nginx}
        procs.update({f"meshgate-{hop}": p for hop, p in self.mesh.items()})
        procs.update({f"haproxy-{hop}": p for hop, p in self.haproxy.items()})
        procs.update(self.control)
        return procs

    def check_alive(self) -> None:
        for name, proc in self.all_procs().items():
            if not proc.alive():
                raise RuntimeError(f"{name} exited:\n{proc.tail()}")

    def metrics(self, hop: str) -> dict[str, float]:
        """One meshgate proxy's /metrics, parsed."""
        status, body = http_call("GET", f"{self.mesh_admin[hop]}/metrics")
        if status != 200:
            raise RuntimeError(f"{hop}'s /metrics answered {status}")
        return parse_metrics(body.decode())


def start(root: Path, owned: Owned, pinning: Pinning, tls: Tls) -> Bed:
    """nginx, both chains, checked end to end (one HTTPS request through each returns nginx's
    body, the meshgate one through its own zone's ingress)."""
    nginx_port, nginx_tls_port, *hp = free_ports(6)
    say("starting nginx")
    config = nginx_tls_config(root, nginx_port, nginx_tls_port, tls)
    nginx = owned.add(Proc("nginx", nginx_argv(config, root), root / "nginx.log", cpus=pinning.load))
    wait_until(lambda: listening(nginx_port), timeout=START_TIMEOUT, what="nginx to listen")
    haproxy_ports = HaproxyPorts(edge=hp[0], ingress=hp[1], local=hp[2], nginx=nginx_port)

    say("starting the HAProxy chain (edge, ingress, local: one process each)")
    configs = haproxy_configs(tls, haproxy_ports, root)
    haproxy: dict[str, Proc] = {}
    logs: dict[str, Path] = {}
    for hop in HAPROXY_HOPS:
        logs[hop] = root / f"haproxy-{hop}.log"
        haproxy[hop] = owned.add(
            Proc(f"haproxy-{hop}", haproxy_argv(configs[hop]), logs[hop], cpus=pinning.proxies)
        )
    for hop, port in zip(
        HAPROXY_HOPS, (haproxy_ports.edge, haproxy_ports.ingress, haproxy_ports.local), strict=True
    ):
        wait_until(lambda port=port: listening(port), timeout=START_TIMEOUT, what=f"HAProxy {hop} to listen")  # type: ignore[misc]

    mesh = MeshStarter(root / "mesh", owned, pinning, tls, nginx_port)
    mesh.start()
    bed = Bed(
        nginx, nginx_port, nginx_tls_port, mesh.edge.https_port, haproxy_ports.edge,
        mesh=mesh.proxies, haproxy=haproxy, control=mesh.control, mesh_admin=mesh.admin, haproxy_logs=logs,
    )  # fmt: skip
    bed.check_alive()
    for name in ("meshgate", "haproxy", "direct"):
        check_request(bed.entry_port(name), tls.public_ca_file)
    accepted = listener_accepted(bed.metrics("ingress"))
    if accepted < 1:
        raise RuntimeError("the edge answered but its zone's ingress accepted no connection")
    return bed


# --- one request, as a client sends it -------------------------------------------------------------


def https_get(port: int, ca_file: Path, path: str = "/") -> tuple[int, dict[str, str], bytes]:
    """GET ``path`` on 127.0.0.1:``port`` with SNI and ``Host`` the public hostname, the public
    certificate verified."""
    context = ssl.create_default_context(cafile=str(ca_file))
    raw = socket.create_connection((LOCALHOST, port), timeout=10)
    conn = http.client.HTTPConnection(HOSTNAME, port, timeout=10)
    conn.sock = context.wrap_socket(raw, server_hostname=HOSTNAME)
    try:
        conn.request("GET", path, headers={"Host": HOSTNAME})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def check_request(port: int, ca_file: Path) -> dict[str, str]:
    """One request must come back 200 with nginx's body, and (through a chain) from ``ZONE``."""
    status, headers, body = https_get(port, ca_file)
    if status != 200 or body.decode(errors="replace") != BODY + "\n":
        raise RuntimeError(f"127.0.0.1:{port} answered {status} {body[:200]!r}")
    zone = headers.get("x-meshgate-zone")
    if zone not in (None, ZONE):
        raise RuntimeError(f"127.0.0.1:{port} answered from zone {zone!r}, not the edge's own ({ZONE})")
    return headers


# --- the meshgate mesh path, through its control planes ----------------------------------------------


def _one_zone(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The demo's resources for ``ZONE`` only: its Zone and Edge, the Service, the certificate's
    Secret, and the GlobalService with that zone alone."""
    kept = []
    for doc in docs:
        kind, spec = doc["kind"], doc["spec"]
        if kind == "Zone" and doc["metadata"]["name"] != ZONE:
            continue
        if kind == "Edge" and spec["zone"] != ZONE:
            continue
        if kind == "GlobalService":
            spec["zones"] = [z for z in spec["zones"] if z["zone"] == ZONE]
        kept.append(doc)
    return kept


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def http_call(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> tuple[int, bytes]:
    """One plain HTTP request to a process of the run (``http://host:port/path``)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None:
        raise ValueError(f"not an http URL: {url}")
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        conn.request(method, parts.path or "/", body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _ok(url: str) -> bool:
    try:
        return http_call("GET", url, timeout=5)[0] == 200
    except (OSError, http.client.HTTPException, ValueError):
        return False


class MeshStarter:
    """The demo's plan reduced to one zone, one local proxy (nginx its one instance), one ingress
    and one edge, started in the order ``meshgate.demo.run.DemoMesh.start`` uses: global CP,
    resources and join tokens through its API, zone CP, then ingress, local proxy and edge. The
    control planes run on the load's CPU(s), the three proxies on the proxies'."""

    def __init__(self, root: Path, owned: Owned, pinning: Pinning, tls: Tls, nginx_port: int) -> None:
        self.root, self.owned, self.pinning, self.tls = root, owned, pinning, tls
        picker = PortPicker(LOCALHOST)
        self.edge = Edge(ZONE, EDGE_NAME, picker.port(), picker.offset(PUBLIC_PORTS.values()))
        self.local = LocalProxy(ZONE, f"{SERVICE}-1", "nginx", nginx_port, picker.port(), picker.port())
        self.ingress = Ingress(ZONE, f"ingress-{ZONE}", picker.port(), picker.port())
        self.plan = Plan(root, LOCALHOST, (self.local,), (self.ingress,), (self.edge,))
        self.control: dict[str, Proc] = {}
        self.proxies: dict[str, Proc] = {}
        self.admin = {
            "edge": f"http://{LOCALHOST}:{self.edge.admin_port}",
            "ingress": f"http://{LOCALHOST}:{self.ingress.admin_port}",
            "local": f"http://{LOCALHOST}:{self.local.admin_port}",
        }
        self.global_url = ""
        self.admin_token = ""

    def start(self) -> None:
        """Returns once an https request through the edge is answered by nginx through the zone."""
        plan = self.plan
        say("starting the meshgate mesh: global CP (SQLite)")
        global_cp = self._spawn("global-cp", plan.global_cp(), self.pinning.load)
        self.control["global-cp"] = global_cp
        d = plan.global_dir

        def global_ready() -> bool:
            self.global_url = _read(d / "address")
            return bool(self.global_url and _read(d / "zone-address")) and _ok(f"{self.global_url}/readyz")

        self._wait(global_cp, global_ready, "ready")
        self.admin_token = _read(plan.admin_token)
        docs = _one_zone(documents(datetime.now(UTC), self.tls.public))
        self._api("POST", "/api/v1/apply", {"kind": "List", "items": docs})
        tokens = {role: self._token(role) for role in TOKEN_ROLES}

        say(f"starting the zone CP of {ZONE}")
        cp_dir = plan.zone_dir(ZONE, "cp")
        write_secret_file(cp_dir / "token", tokens["zone"])
        zone_cp = self._spawn(
            "zone-cp", plan.zone_cp(ZONE, _read(d / "zone-address"), cp_dir / "token"), self.pinning.load
        )
        self.control["zone-cp"] = zone_cp
        urls: dict[str, str] = {}

        def zone_ready() -> bool:
            api, proxy = _read(cp_dir / "address"), _read(cp_dir / "proxy-address")
            if api and proxy and _ok(f"{api}/readyz"):
                urls["proxy"] = proxy
                return True
            return False

        self._wait(zone_cp, zone_ready, "enrolled")

        say("starting the zone's ingress, the local proxy in front of nginx, and the edge")
        zone_cp_url, cpus = urls["proxy"], self.pinning.proxies
        ingress_dir = plan.zone_dir(ZONE, "ingress")
        write_secret_file(ingress_dir / "token", tokens["ingress"])
        (ingress_dir / "proxy.json").write_text(json.dumps(plan.ingress_config(self.ingress), indent=2))
        ingress = self._spawn(
            "ingress", plan.proxy("ingress", ingress_dir, zone_cp_url, ingress_dir / "token"), cpus
        )
        local_dir = plan.zone_dir(ZONE, self.local.name)
        write_secret_file(local_dir / "token", tokens["proxy"])
        (local_dir / "proxy.json").write_text(json.dumps(plan.local_proxy_config(self.local), indent=2))
        local = self._spawn("local", plan.proxy("local", local_dir, zone_cp_url, local_dir / "token"), cpus)
        edge_dir = plan.edge_dir(self.edge)
        write_secret_file(edge_dir / "token", tokens["edge"])
        (edge_dir / "edge.json").write_text(json.dumps(plan.edge_config(self.edge), indent=2))
        edge = self._spawn("edge", plan.edge(self.edge, zone_cp_url, edge_dir / "token"), cpus)
        self.proxies = {"edge": edge, "ingress": ingress, "local": local}
        for hop, proc in self.proxies.items():
            url = f"{self.admin[hop]}/readyz"
            self._wait(proc, lambda url=url: _ok(url), "ready")  # type: ignore[misc]

        def served() -> bool:
            try:
                check_request(self.edge.https_port, self.tls.public_ca_file)
            except (RuntimeError, OSError, http.client.HTTPException):
                return False
            return True

        self._wait(edge, served, f"serving {HOSTNAME} through {ZONE}'s ingress")

    def _spawn(self, name: str, args: list[str], cpus: frozenset[int] | None) -> Proc:
        log = self.root / "logs" / f"{name}.log"
        return self.owned.add(Proc(name, [*MESHGATE, *args], log, cpus=cpus))

    def _token(self, role: str) -> str:
        body = {"role": role, "zone": ZONE, "ttl": "1h", "reusable": role == "proxy"}
        return str(self._api("POST", "/api/v1/tokens", body)["token"])

    def _api(self, method: str, path: str, body: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.admin_token}", "Content-Type": "application/json"}
        status, answer = http_call(method, self.global_url + path, json.dumps(body).encode(), headers)
        if status not in (200, 201):
            raise RuntimeError(f"{method} {path}: {status} {answer[:2000]!r}")
        return json.loads(answer or b"null")

    def _wait(self, proc: Proc, condition: Callable[[], bool], what: str) -> None:
        def ready() -> bool:
            if not proc.alive():
                raise RuntimeError(f"{proc!r} exited before {what}:\n{proc.tail()}")
            return condition()

        wait_until(ready, timeout=START_TIMEOUT, what=f"{proc.name}: {what}", interval=0.05)
