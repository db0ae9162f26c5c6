"""What the ``memory`` benchmark builds before it measures: a small real mesh, the key material
its clients and peers need, and the four proxies measured, each a fresh process per measurement.

The mesh (started once, never measured)::

    nginx (the workload: return 200, a 100-byte body)
    global CP (SQLite) -> zone CP "bench" -> ingress-1, web-1 (local proxy of service web, in front of nginx)

The proxies measured, with what a client connection to each goes through:

- ``meshgate-proxy``: ``meshgate proxy run --role local`` for service ``api`` (name ``api-1``),
  enrolled with a join token, in front of nginx. ``plain``: its ``<service>.mesh`` HTTP
  listener, ``Host: web.mesh`` (on to web-1 over pooled mTLS); ``mtls``: its inbound, with a
  client certificate of the mesh (on to nginx).
- ``meshgate-edge``: ``meshgate edge run`` (no BGP) serving the global service ``web`` on
  127.0.0.1. ``plain``: its HTTP port, ``Host`` the demo's hostname; ``https``: its terminating
  HTTPS port (SNI the same name, a certificate from a CA made for the run). Both on to zone bench's ingress, web-1, nginx.
- ``haproxy``: HAProxy 2.6, ``nbthread 1``, ``mode http``, three frontends to nginx: ``plain``,
  ``mtls`` (``verify required`` against the mesh root, the certificate meshgate's inbound
  presents) and ``https`` (the edge's public certificate).
- ``nginx``: nginx 1.22 as a proxy, one process, the same three servers.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from bench.http_setup import NGINX, nginx_argv, nginx_config
from bench.l4_setup import HAPROXY, LOCALHOST, Proc, listening, wait_until
from meshgate.demo.resources import HOSTNAME, PublicTls, public_tls
from meshgate.pki.ca import CertificateAuthority
from meshgate.pki.keys import (
    certificate_from_pem,
    new_private_key,
    private_key_from_pem,
    private_key_to_pem,
)
from meshgate.pki.leaf import issue_leaf
from tests.support.factories import doc
from tests.support.processes import MESHGATE, Admin, GlobalCPProcess, ZoneCPProcess
from tests.support.proxies import ProxyProcess, listen_port, parse_metrics

ZONE: Final = "bench"
VIP: Final = "203.0.113.10"  # named by the GlobalService; the edge serves on 127.0.0.1 instead
TLS_SECRET: Final = "web-public-tls"  # noqa: S105 - a Secret's name
#: long enough that nothing closes an idle connection while it is measured
IDLE_TIMEOUT_S: Final = 600
HEALTH: Final = {"type": "tcp", "interval": 1.0, "timeout": 1.0, "rise": 1, "fall": 2}
START_TIMEOUT: Final = 60.0
KINDS: Final = ("plain", "mtls", "https")


@dataclass(frozen=True)
class Files:
    """Key material on disk: the mesh root, a client identity of the mesh, the certificate a mesh
    inbound presents (for HAProxy's and nginx's ``mtls``), the edge's public certificate and the
    CA that signed it."""

    mesh_root: Path
    client_chain: Path
    client_key: Path
    inbound_chain: Path  # leaf (spiffe://<td>/svc/api) + zone intermediate
    inbound_key: Path
    inbound_haproxy: Path  # chain then key
    public_ca: Path
    public_chain: Path
    public_key: Path
    public_haproxy: Path


@dataclass(frozen=True)
class Target:
    """Where a client connects for one kind of connection, and how."""

    port: int
    request_host: str
    tls: dict[str, Any] | None = None  # memory_client's ``tls``: ca, cert, key, sni, check_hostname


@dataclass
class Subject:
    """One proxy measured: how to start a fresh process of it in a directory, when it is ready,
    and the connection kinds it serves."""

    name: str
    label: str
    targets: dict[str, Target]
    start: Callable[[Path], Proc]
    ready: Callable[[Proc], bool]
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass
class Mesh:
    """The processes every measurement relies on, and what subjects need from them."""

    root: Path
    workload_port: int
    cp: GlobalCPProcess
    admin: Admin
    zone_cp: ZoneCPProcess
    trust_domain: str
    files: Files
    ports: dict[str, int]  # the GlobalService's http and https ports


# --- the mesh ------------------------------------------------------------------------------------


def start_workload(root: Path, owned_add: Callable[[Proc], Proc]) -> int:
    """nginx answering every request with 200 and a 100-byte body (the ``http`` scenario's)."""
    directory = root / "workload"
    directory.mkdir(parents=True, exist_ok=True)
    port = listen_port()
    argv = nginx_argv(nginx_config(directory, port), directory)
    owned_add(Proc("workload-nginx", argv, directory / "nginx.log"))
    wait_until(lambda: listening(port), timeout=START_TIMEOUT, what="the workload (nginx) to listen")
    return port


def documents(ports: dict[str, int], public: PublicTls) -> list[dict[str, Any]]:
    return [
        doc("Zone", ZONE, {"region": ZONE, "location": {"latitude": 48.9, "longitude": 2.4}}),
        doc("Service", "web", {"ports": [{"name": "http", "port": 8080, "protocol": "http"}]}),
        doc("Service", "api", {"ports": [{"name": "http", "port": 8080, "protocol": "http"}]}),
        doc("Secret", TLS_SECRET, {"type": "tls", "zones": ["*"],
                                   "data": {"tls.crt": public.chain_pem, "tls.key": public.key_pem}}),
        doc("GlobalService", "web", {
            "service": "web", "hostnames": [HOSTNAME], "vips": [VIP], "certificateRef": TLS_SECRET,
            "ports": [{"name": "http", "port": ports["http"], "protocol": "http", "targetPort": "http"},
                      {"name": "https", "port": ports["https"], "protocol": "https", "targetPort": "http"}],
            "zones": [{"zone": ZONE}],
        }),
    ]  # fmt: skip


def start_mesh(root: Path, owned_add: Callable[[Any], Any]) -> Mesh:
    """nginx, the global CP, zone CP ``bench``, its ingress and web-1; the key material."""
    workload_port = start_workload(root, owned_add)
    cp = owned_add(GlobalCPProcess(root / "global"))
    cp.start(START_TIMEOUT)
    admin = Admin(cp)
    public = public_tls(datetime.now(UTC))
    ports = {"http": listen_port(), "https": listen_port()}
    admin.apply(*documents(ports, public))
    zone_cp = owned_add(ZoneCPProcess(root / "zone-cp", ZONE, cp.zone_url, admin.token("zone", ZONE)))
    zone_cp.start(START_TIMEOUT)
    ingress = owned_add(
        ProxyProcess(
            root / "ingress-1", "ingress", zone_cp.proxy_url,
            {"name": "ingress-1", "listen": {"address": LOCALHOST, "port": listen_port()}},
            token=admin.token("ingress", ZONE),
        )
    )  # fmt: skip
    ingress.start(wait_ready=False)
    web = owned_add(
        ProxyProcess(
            root / "web-1", "local", zone_cp.proxy_url,
            {"name": "web-1", "service": "web", "inbound": {"address": LOCALHOST, "port": listen_port()},
             "instances": [{"address": LOCALHOST, "port": workload_port}], "health": HEALTH,
             "http": {"idleTimeout": IDLE_TIMEOUT_S}},
            token=admin.token("proxy", ZONE),
        )
    )  # fmt: skip
    web.start(wait_ready=False)
    for proxy in (ingress, web):
        wait_until(proxy.ready, timeout=START_TIMEOUT, what=f"{proxy.name} to be ready ({proxy.log})")
    files, trust_domain = key_material(root / "pki", zone_cp.data_dir / "pki", public)
    return Mesh(root, workload_port, cp, admin, zone_cp, trust_domain, files, ports)


def key_material(directory: Path, zone_pki: Path, public: PublicTls) -> tuple[Files, str]:
    """A client identity of the mesh and the certificate a mesh inbound presents, both issued by
    the zone CP's intermediate (read from its data dir), and the public certificate as files."""
    root_pem = (zone_pki / "root.pem").read_bytes()
    zone_ca = CertificateAuthority(
        certificate_from_pem((zone_pki / "intermediate.pem").read_bytes()),
        private_key_from_pem((zone_pki / "intermediate.key").read_bytes()),
        (certificate_from_pem(root_pem),),
    )
    td = zone_ca.trust_domain
    now = datetime.now(UTC)
    directory.mkdir(parents=True, exist_ok=True)

    def leaf(spiffe_id: str, *, server: bool) -> tuple[bytes, bytes]:
        key = new_private_key()
        cert = issue_leaf(zone_ca, key.public_key(), spiffe_id=spiffe_id, now=now, server=server, client=True)
        return zone_ca.presented_chain_pem(cert), private_key_to_pem(key)

    client_chain, client_key = leaf(f"spiffe://{td}/svc/bench-client", server=False)
    inbound_chain, inbound_key = leaf(f"spiffe://{td}/svc/api", server=True)
    ca, chain, key = (pem.encode() for pem in (public.ca_pem, public.chain_pem, public.key_pem))
    contents = {
        "mesh-root.pem": root_pem,
        "client.pem": client_chain,
        "client.key": client_key,
        "inbound.pem": inbound_chain,
        "inbound.key": inbound_key,
        "inbound-haproxy.pem": inbound_chain.rstrip(b"\n") + b"\n" + inbound_key,
        "public-ca.pem": ca,
        "public.pem": chain,  # the leaf, then the CA
        "public.key": key,
        "public-haproxy.pem": chain + key,
    }
    for name, data in contents.items():
        (directory / name).write_bytes(data)
        (directory / name).chmod(0o600)
    d = directory
    files = Files(
        d / "mesh-root.pem", d / "client.pem", d / "client.key", d / "inbound.pem", d / "inbound.key",
        d / "inbound-haproxy.pem", d / "public-ca.pem", d / "public.pem", d / "public.key",
        d / "public-haproxy.pem",
    )  # fmt: skip
    return files, td


def mesh_client_tls(files: Files, sni: str) -> dict[str, Any]:
    """A mesh peer's view: the mesh root, a client certificate, no DNS name to check (the
    server's identity is a SPIFFE ID)."""
    return {"ca": str(files.mesh_root), "cert": str(files.client_chain), "key": str(files.client_key),
            "sni": sni, "check_hostname": False}  # fmt: skip


def public_client_tls(files: Files) -> dict[str, Any]:
    """A browser's view: the public CA, the hostname checked, no client certificate."""
    return {"ca": str(files.public_ca), "sni": HOSTNAME, "check_hostname": True}


# --- the subjects --------------------------------------------------------------------------------


def _admin_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{LOCALHOST}:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, ""
    except OSError:
        return 0, ""


def _alive(proc: Proc) -> None:
    if not proc.alive():
        raise RuntimeError(f"{proc!r} exited at start:\n{proc.tail()}")


def meshgate_proxy(mesh: Mesh) -> Subject:
    """``api-1``: a local proxy with an mTLS inbound and a ``<service>.mesh`` listener; a fresh
    data dir for every process (each enrolls with the join token)."""
    inbound, mesh_port, admin = listen_port(), listen_port(), listen_port()
    token = mesh.admin.token("proxy", ZONE, reusable=True, ttl="24h")
    config = {
        "name": "api-1", "service": "api", "inbound": {"address": LOCALHOST, "port": inbound},
        "instances": [{"address": LOCALHOST, "port": mesh.workload_port}], "health": HEALTH,
        "meshOutbound": {"port": mesh_port}, "http": {"idleTimeout": IDLE_TIMEOUT_S},
        "admin": f"{LOCALHOST}:{admin}",
    }  # fmt: skip

    def start(directory: Path) -> Proc:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "proxy.json").write_text(json.dumps(config))
        (directory / "token").write_text(token)
        argv = [*MESHGATE, "proxy", "run", "--role", "local", "--zone-cp", mesh.zone_cp.proxy_url,
                "--data-dir", str(directory / "data"), "--config", str(directory / "proxy.json"),
                "--token-file", str(directory / "token"), "--drain-timeout", "1"]  # fmt: skip
        return Proc("meshgate-proxy", argv, directory / "proxy.log")

    def ready(proc: Proc) -> bool:
        _alive(proc)
        return _admin_get(admin, "/readyz")[0] == 200

    sni = f"api.{ZONE}.svc.meshgate"
    return Subject(
        "meshgate-proxy",
        "meshgate local proxy",
        {
            "plain": Target(mesh_port, "web.mesh"),
            "mtls": Target(inbound, f"api.{ZONE}", mesh_client_tls(mesh.files, sni)),
        },
        start,
        ready,
        {"command": "meshgate proxy run --role local", "config": config},
    )


def meshgate_edge(mesh: Mesh) -> Subject:
    """``edge-1``: an edge without BGP serving the global service on 127.0.0.1 (no port offset);
    ready once its admin says so and its probes reach zone bench (no client request before)."""
    admin = listen_port()
    token = mesh.admin.token("edge", ZONE, reusable=True, ttl="24h")
    config = {
        "name": "edge-1", "admin": f"{LOCALHOST}:{admin}", "listen": {"address": LOCALHOST, "portOffset": 0},
        "drain": {"threshold": 0, "deadline": 1}, "bgp": {"enabled": False},
        "http": {"idleTimeout": IDLE_TIMEOUT_S},
    }  # fmt: skip

    def start(directory: Path) -> Proc:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "edge.json").write_text(json.dumps(config))
        (directory / "token").write_text(token)
        argv = [*MESHGATE, "edge", "run", "--zone-cp", mesh.zone_cp.proxy_url, "--data-dir",
                str(directory / "data"), "--config", str(directory / "edge.json"),
                "--token-file", str(directory / "token")]  # fmt: skip
        return Proc("meshgate-edge", argv, directory / "edge.log")

    def ready(proc: Proc) -> bool:
        _alive(proc)
        if _admin_get(admin, "/readyz")[0] != 200:
            return False
        code, text = _admin_get(admin, "/metrics")
        key = f'meshgate_edge_zone_reachable{{service="web",zone="{ZONE}"}}'
        return code == 200 and parse_metrics(text).get(key) == 1.0

    return Subject(
        "meshgate-edge",
        "meshgate edge",
        {
            "plain": Target(mesh.ports["http"], HOSTNAME),
            "https": Target(mesh.ports["https"], HOSTNAME, public_client_tls(mesh.files)),
        },
        start,
        ready,
        {"command": "meshgate edge run (bgp disabled)", "config": config},
    )


def _peer_targets(mesh: Mesh, ports: dict[str, int]) -> dict[str, Target]:
    return {
        "plain": Target(ports["plain"], HOSTNAME),
        "mtls": Target(ports["mtls"], HOSTNAME, mesh_client_tls(mesh.files, f"api.{ZONE}.svc.meshgate")),
        "https": Target(ports["https"], HOSTNAME, public_client_tls(mesh.files)),
    }


def haproxy_config(directory: Path, mesh: Mesh, ports: dict[str, int], maxconn: int) -> Path:
    """One thread, ``mode http``, three frontends to nginx; TLS as meshgate's (TLS 1.2+, ECDHE
    with AES-GCM or ChaCha20, no session tickets); keep-alive timeouts long; no log."""
    f = mesh.files
    text = f"""\
global
    nbthread 1
    maxconn {maxconn}
    ssl-default-bind-options ssl-min-ver TLSv1.2 no-tls-tickets
    ssl-default-bind-ciphers ECDHE+AESGCM:ECDHE+CHACHA20

defaults
    mode http
    timeout connect 5s
    timeout http-request 10s
    timeout http-keep-alive {IDLE_TIMEOUT_S}s
    timeout client {IDLE_TIMEOUT_S}s
    timeout server 15s

frontend plain
    bind {LOCALHOST}:{ports["plain"]}
    default_backend workload

frontend mtls
    bind {LOCALHOST}:{ports["mtls"]} ssl crt {f.inbound_haproxy} ca-file {f.mesh_root} verify required
    default_backend workload

frontend https
    bind {LOCALHOST}:{ports["https"]} ssl crt {f.public_haproxy}
    default_backend workload

backend workload
    server nginx {LOCALHOST}:{mesh.workload_port}
"""
    path = directory / "haproxy.cfg"
    path.write_text(text)
    return path


def haproxy(mesh: Mesh, connections: int) -> Subject:
    ports = {kind: listen_port() for kind in KINDS}
    maxconn = max(4000, connections + 500)

    def start(directory: Path) -> Proc:
        directory.mkdir(parents=True, exist_ok=True)
        config = haproxy_config(directory, mesh, ports, maxconn)
        return Proc("haproxy", [HAPROXY, "-db", "-f", str(config)], directory / "haproxy.log")

    def ready(proc: Proc) -> bool:
        _alive(proc)
        return all(listening(port) for port in ports.values())

    return Subject("haproxy", "HAProxy", _peer_targets(mesh, ports), start, ready,
                   {"maxconn": maxconn, "threads": 1, "http_reuse": "safe (default)"})  # fmt: skip


def nginx_proxy_config(directory: Path, mesh: Mesh, ports: dict[str, int], connections: int) -> Path:
    """nginx as a reverse proxy: one process, three servers to the workload over an upstream
    keep-alive pool; TLS as HAProxy's; no access log."""
    f, d = mesh.files, directory
    location = """
        location / {
            proxy_pass http://workload;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
        }"""
    text = f"""\
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile {2 * connections + 1000};
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;

events {{
    worker_connections {connections + 500};
}}

http {{
    access_log off;
    client_body_temp_path {d}/client-body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_timeout {IDLE_TIMEOUT_S}s;
    keepalive_requests 1000000;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_ciphers ECDHE+AESGCM:ECDHE+CHACHA20;
    ssl_prefer_server_ciphers on;
    ssl_session_tickets off;

    upstream workload {{
        server {LOCALHOST}:{mesh.workload_port};
        keepalive 16;
    }}

    server {{
        listen {LOCALHOST}:{ports["plain"]};{location}
    }}

    server {{
        listen {LOCALHOST}:{ports["mtls"]} ssl;
        ssl_certificate {f.inbound_chain};
        ssl_certificate_key {f.inbound_key};
        ssl_client_certificate {f.mesh_root};
        ssl_verify_client on;
        ssl_verify_depth 3;{location}
    }}

    server {{
        listen {LOCALHOST}:{ports["https"]} ssl;
        ssl_certificate {f.public_chain};
        ssl_certificate_key {f.public_key};{location}
    }}
}}
"""
    path = directory / "nginx.conf"
    path.write_text(text)
    return path


def nginx_proxy(mesh: Mesh, connections: int) -> Subject:
    ports = {kind: listen_port() for kind in KINDS}

    def start(directory: Path) -> Proc:
        directory.mkdir(parents=True, exist_ok=True)
        config = nginx_proxy_config(directory, mesh, ports, connections)
        return Proc("nginx", nginx_argv(config, directory), directory / "nginx.log")

    def ready(proc: Proc) -> bool:
        _alive(proc)
        return all(listening(port) for port in ports.values())

    return Subject("nginx", "nginx", _peer_targets(mesh, ports), start, ready,
                   {"processes": 1, "upstream_keepalive": 16})  # fmt: skip


def subjects(mesh: Mesh, connections: int) -> dict[str, Subject]:
    """In the order a round measures them: meshgate and a peer alternate."""
    return {
        "meshgate-proxy": meshgate_proxy(mesh),
        "haproxy": haproxy(mesh, connections),
        "meshgate-edge": meshgate_edge(mesh),
        "nginx": nginx_proxy(mesh, connections),
    }


def client_argv(spec: Path) -> list[str]:
    return [sys.executable, "-m", "bench.memory_client", str(spec)]


def missing_binaries() -> list[str]:
    return [path for path in (NGINX, HAPROXY) if not Path(path).exists()]
