"""What the ``mesh`` and ``latency`` benchmarks build before they measure, apart from the meshgate
processes (``bench.mesh_start``): the TLS material, nginx with a plain and a TLS port, the HAProxy
chain's three configurations, the wrk script that reports p99.9, and how wrk's and the meshgate
processes' figures are read.

The mesh path and the HAProxy chain do the same hops::

    client --HTTPS--> edge (terminates TLS, routes by Host) --mTLS, SNI--> zone ingress (SNI
    passthrough, L4) --> local proxy (terminates mTLS, verifies the caller) --HTTP--> nginx

Certificates: the public one is the demo's (``meshgate.demo.resources.public_tls``: ECDSA P-256,
signed by a CA made for the run); the HAProxy chain's mTLS leaves are the ``l4`` benchmark's
(``bench.l4_setup.make_pki``: a mesh root, a zone intermediate per side, P-256 leaves); the meshgate
chain's come from its zone CP, as in production.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from bench.http_setup import BODY, nginx_config
from bench.l4_setup import HAPROXY, LOCALHOST, SNI, Pki, make_pki
from meshgate.demo.resources import HOSTNAME, PublicTls, edge_name, public_tls

ZONE: Final = "eu-west"  # the one zone of the mesh path: the edge's own
EDGE_NAME: Final = edge_name(ZONE)
HAPROXY_HOPS: Final = ("edge", "ingress", "local")


@dataclass(frozen=True)
class Tls:
    """The public certificate (the edge's and HAProxy 1's, nginx's TLS port's) and the HAProxy
    chain's mesh PKI."""

    public: PublicTls
    public_ca_file: Path  # what clients trust
    public_crt_file: Path  # chain, for nginx
    public_key_file: Path
    public_haproxy_file: Path  # chain then key, for HAProxy
    mesh: Pki


def make_tls(directory: Path) -> Tls:
    directory.mkdir(parents=True, exist_ok=True)
    public = public_tls(datetime.now(UTC))
    files = {
        "public-ca.pem": public.ca_pem,
        "public.crt": public.chain_pem,
        "public.key": public.key_pem,
        "public-haproxy.pem": public.chain_pem.rstrip("\n") + "\n" + public.key_pem,
    }
    for name, text in files.items():
        path = directory / name
        path.write_text(text)
        path.chmod(0o600)
    return Tls(
        public,
        directory / "public-ca.pem",
        directory / "public.crt",
        directory / "public.key",
        directory / "public-haproxy.pem",
        make_pki(directory / "mesh"),
    )


# --- the workload: nginx, plain and TLS -------------------------------------------------------------


def nginx_tls_config(directory: Path, port: int, tls_port: int, tls: Tls) -> Path:
    """``bench.http_setup``'s nginx (one process, ``return 200`` with a 100-byte body, keep-alive
    without a request limit) plus a TLS port with the public certificate, TLS settings as
    meshgate's and HAProxy's (TLS 1.2+, ECDHE with AES-GCM or ChaCha20, no session tickets), for
    the ``latency`` scenario's direct path."""
    path = nginx_config(directory, port)
    text = path.read_text().rstrip()
    if not text.endswith("}"):
        raise ValueError("unexpected nginx configuration (no closing brace)")
    server = f"""
    server {{
        listen {LOCALHOST}:{tls_port} ssl backlog=4096;
        ssl_certificate {tls.public_crt_file};
        ssl_certificate_key {tls.public_key_file};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers ECDHE+AESGCM:ECDHE+CHACHA20;
        ssl_session_tickets off;
        location / {{
            return 200 "{BODY}\\n";
        }}
    }}
}}
"""
    path.write_text(text[:-1] + server)
    return path


# --- the HAProxy chain ---------------------------------------------------------------------------


@dataclass(frozen=True)
class HaproxyPorts:
    edge: int  # HTTPS, where the client connects
    ingress: int
    local: int  # mTLS
    nginx: int  # plain


_GLOBAL = """\
global
    nbthread 1
    maxconn 4000
    log stdout format raw local0 info
    stats socket {sock} mode 600 level user
    ssl-default-bind-options ssl-min-ver TLSv1.2 no-tls-tickets
    ssl-default-bind-ciphers ECDHE+AESGCM:ECDHE+CHACHA20
    ssl-default-server-options ssl-min-ver TLSv1.2 no-tls-tickets
    ssl-default-server-ciphers ECDHE+AESGCM:ECDHE+CHACHA20
    ssl-server-verify required

"""

_HTTP_DEFAULTS = """\
defaults
    mode http
    log global
    option httplog
    option dontlog-normal
    http-reuse safe
    timeout connect 5s
    timeout http-request 10s
    timeout http-keep-alive 60s
    timeout client 60s
    timeout server 15s
"""

_TCP_DEFAULTS = """\
defaults
    mode tcp
    log global
    option tcplog
    option dontlog-normal
    timeout connect 5s
    timeout client 60s
    timeout server 60s
"""

#: what meshgate's request rewrite does at each HTTP hop (``meshgate.proxy.http.server``)
_REWRITE = """\
    option forwardfor
    http-request set-header X-Forwarded-Proto https
    http-request add-header Forwarded "for=%[src];proto=https"
    unique-id-format %{+X}o\\ %ci:%cp_%fi:%fp_%Ts_%rt:%pid
    unique-id-header X-Request-ID
"""


def haproxy_configs(tls: Tls, ports: HaproxyPorts, directory: Path) -> dict[str, Path]:
    """HAProxy 1 (``edge``): HTTPS with the public certificate, routed by Host, the request
    rewritten as the edge does, ``X-Meshgate-Edge``/``-Zone`` added to responses, mTLS with SNI
    to HAProxy 2, connections kept alive (``http-reuse safe``). HAProxy 2 (``ingress``): TCP mode,
    the ClientHello's SNI picks the backend (``req.ssl_sni``), bytes relayed. HAProxy 3 (``local``):
    terminates mTLS and verifies the client certificate (mesh root), sets the caller's identity
    header (the certificate's subject: HAProxy 2.6 has no fetch for a URI SAN), keep-alive to
    nginx. One thread each; only errors are logged (``dontlog-normal``), as the meshgate chain
    logs no request by default."""
    mesh = tls.mesh
    bodies = {
        "edge": _HTTP_DEFAULTS
        + f"""
frontend edge
    bind {LOCALHOST}:{ports.edge} ssl crt {tls.public_haproxy_file}
{_REWRITE}    http-request del-header X-Meshgate-Client-Identity
    http-response set-header X-Meshgate-Edge {EDGE_NAME}
    http-response set-header X-Meshgate-Zone {ZONE}
    use_backend zone_ingress if {{ req.hdr(host),field(1,:) -i {HOSTNAME} }}

backend zone_ingress
    server ingress {LOCALHOST}:{ports.ingress} ssl crt {mesh.a_file} ca-file {mesh.root_file} verify required sni str({SNI})
""",
        "ingress": _TCP_DEFAULTS
        + f"""
frontend ingress
    bind {LOCALHOST}:{ports.ingress}
    tcp-request inspect-delay 5s
    tcp-request content accept if {{ req_ssl_hello_type 1 }}
    use_backend local_proxy if {{ req.ssl_sni -i {SNI} }}

backend local_proxy
    server local {LOCALHOST}:{ports.local}
""",
        "local": _HTTP_DEFAULTS
        + f"""
frontend local_inbound
    bind {LOCALHOST}:{ports.local} ssl crt {mesh.b_file} ca-file {mesh.root_file} verify required
{_REWRITE}    http-request set-header X-Meshgate-Client-Identity %[ssl_c_s_dn]
    default_backend instances

backend instances
    server nginx {LOCALHOST}:{ports.nginx}
""",
    }
    paths: dict[str, Path] = {}
    for hop, body in bodies.items():
        path = paths[hop] = directory / f"haproxy-{hop}.cfg"
        path.write_text(_GLOBAL.format(sock=directory / f"haproxy-{hop}.sock") + body)
    return paths


def haproxy_argv(config: Path) -> list[str]:
    return [HAPROXY, "-db", "-f", str(config)]  # -db: foreground, one process (no master)


_HTTPLOG: Final = re.compile(r"^\S+ \[[^\]]+\] \S+ \S+ \S+ (-?\d+) \S+ \S+ \S+ (\S{4}) ")
_TCPLOG: Final = re.compile(r"^\S+ \[[^\]]+\] \S+ \S+ \S+ \S+ (\S{2}) \d+/\d+/\d+/\d+/\d+ \d+/\d+\s*$")
_CONNECTION: Final = re.compile(r"^\S+ \[[^\]]+\] \S+: (.+)$")


def count_haproxy_log(log: Path) -> dict[str, Any]:
    """What one HAProxy of the chain logged (with ``dontlog-normal``: only what went wrong):
    requests (httplog) or sessions (tcplog) by termination state, and connection-level messages
    (a failed handshake). Those the client side ended (a state starting with ``C``, a connection
    closed during its handshake) are wrk's stop, or HAProxy 1 closing its server connections
    after it; anything else is an error. (NUL bytes left by emptying the file are skipped.)"""
    cut, errors = 0, Counter[str]()
    try:
        text = log.read_text(errors="replace").replace("\x00", "")
    except OSError:
        return {"cut_by_client": 0, "errors": {}}
    for line in text.splitlines():
        if (match := _HTTPLOG.match(line) or _TCPLOG.match(line)) is not None:
            state = match.group(match.lastindex or 1)
            if state.startswith("C"):
                cut += 1
            else:
                status = match.group(1) if match.re is _HTTPLOG else ""
                errors[f"state {state}" + (f" status {status}" if status else "")] += 1
        elif (match := _CONNECTION.match(line)) is not None:
            if "closed during SSL handshake" in match.group(1):
                cut += 1
            else:
                errors[match.group(1)] += 1
    return {"cut_by_client": cut, "errors": dict(errors)}


# --- the meshgate processes' counters (Prometheus text from their admin /metrics) -------------------

_SAMPLE: Final = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")


def parse_metrics(text: str) -> dict[str, float]:
    """``name{labels}`` -> value, every sample of a Prometheus text exposition."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is not None:
            try:
                out[match.group(1) + (match.group(2) or "")] = float(match.group(3))
            except ValueError:
                continue
    return out


def http_counts(metrics: dict[str, float]) -> dict[str, float]:
    """From one process's metrics: requests by response class (``meshgate_http_requests_total``
    summed over the other labels), upstream errors, refusals and retries."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name, _, labels = key.partition("{")
        if name == "meshgate_http_requests_total":
            found = re.search(r'(?:class|code)="([^"]*)"', labels)
            label = f"requests_{found.group(1) if found else 'all'}"
        elif name in (
            "meshgate_http_upstream_errors_total",
            "meshgate_http_requests_refused_total",
            "meshgate_http_upstream_retries_total",
        ):
            label = name.removeprefix("meshgate_http_").removesuffix("_total")
        else:
            continue
        out[label] = out.get(label, 0) + value
    return out


def listener_accepted(metrics: dict[str, float]) -> float:
    """Connections the process's listeners accepted (``meshgate_proxy_listener_accepted_total``)."""
    return sum(v for k, v in metrics.items() if k.startswith("meshgate_proxy_listener_accepted_total"))
