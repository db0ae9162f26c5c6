"""What the ``l4`` benchmark builds before it measures: a mesh PKI, free ports, the three hops of
each chain (meshgate specs for ``bench.l4_node``, HAProxy configuration files) and processes
owned by PID.

Both chains do the same hops::

    client -> A (plain TCP in, mTLS out as spiffe://<td>/svc/a, SNI b.two.svc.meshgate)
           -> zone ingress (reads the ClientHello's SNI, relays the TLS bytes untouched)
           -> B (terminates mTLS, requires a client certificate from the mesh) -> workload
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from meshgate.pki.ca import CertificateAuthority, create_root_ca, issue_intermediate
from meshgate.pki.keys import make_csr, new_private_key, private_key_to_pem
from meshgate.pki.leaf import issue_leaf

TRUST_DOMAIN: Final = "bench.example"
ZONE_A: Final = "one"  # A's zone
ZONE_B: Final = "two"  # the ingress's and B's zone
SNI: Final = f"b.{ZONE_B}.svc.meshgate"
HAPROXY: Final = "/usr/sbin/haproxy"
IPERF3: Final = "/usr/bin/iperf3"
HOPS: Final = ("a", "ingress", "b")
LOCALHOST: Final = "127.0.0.1"


# --- the mesh PKI --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Leaf:
    spiffe_id: str
    chain_pem: bytes  # leaf, then its zone's intermediate
    key_pem: bytes

    def haproxy_pem(self) -> bytes:
        """HAProxy's ``crt`` file: the chain it presents, then the key."""
        return self.chain_pem.rstrip(b"\n") + b"\n" + self.key_pem


@dataclass(frozen=True)
class Pki:
    root_pem: bytes
    a: Leaf
    b: Leaf
    root_file: Path
    a_file: Path  # chain + key, for HAProxy
    b_file: Path


def _zone_authority(root: CertificateAuthority, zone: str, now: datetime) -> CertificateAuthority:
    key = new_private_key()
    csr = make_csr(key, f"spiffe://{root.trust_domain}/zone/{zone}/cp")
    cert = issue_intermediate(root, csr, zone=zone, trust_domain=root.trust_domain, now=now)
    return CertificateAuthority(cert, key, (root.certificate,))


def _leaf(zone: CertificateAuthority, spiffe_id: str, now: datetime, dns_names: Sequence[str] = ()) -> Leaf:
    key = new_private_key()
    cert = issue_leaf(zone, key.public_key(), spiffe_id=spiffe_id, now=now, dns_names=dns_names)
    return Leaf(spiffe_id, zone.presented_chain_pem(cert), private_key_to_pem(key))


def make_pki(directory: Path) -> Pki:
    """A root CA, one intermediate per zone, and the leaves of A (zone one) and B (zone two).

    B's leaf also names ``b.two.svc.meshgate`` as a DNS SAN: HAProxy matches the SNI it sends
    against the server certificate's DNS names whenever ``verify required`` and ``sni`` are set
    (its stand-in for meshgate's SPIFFE ID check). meshgate ignores DNS SANs (exactly one URI
    SAN is still required), so both chains use the same two certificates."""
    now = datetime.now(UTC)
    root = create_root_ca(TRUST_DOMAIN, mesh="bench", now=now)
    a = _leaf(_zone_authority(root, ZONE_A, now), f"spiffe://{TRUST_DOMAIN}/svc/a", now)
    b = _leaf(_zone_authority(root, ZONE_B, now), f"spiffe://{TRUST_DOMAIN}/svc/b", now, [SNI])
    directory.mkdir(parents=True, exist_ok=True)
    files = directory / "root.pem", directory / "a.pem", directory / "b.pem"
    for path, data in zip(files, (root.certificate_pem(), a.haproxy_pem(), b.haproxy_pem()), strict=True):
        path.write_bytes(data)
        path.chmod(0o600)
    return Pki(root.certificate_pem(), a, b, *files)


# --- ports ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ports:
    """One chain's ports on 127.0.0.1."""

    a: int  # where the client connects (A's outbound)
    ingress: int
    b: int  # B's mTLS inbound
    workload: int  # the iperf3 server
    a_inbound: int = 0  # a local proxy always has an inbound; A's is unused (meshgate only)


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports the kernel had free just now (bound together, then released)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(n)]
        for sock in sockets:
            sock.bind((LOCALHOST, 0))
        return [sock.getsockname()[1] for sock in sockets]


def listening(port: int) -> bool:
    """Whether a TCP socket listens on ``port`` (from /proc/net/tcp: no connection is made, so
    nothing is forwarded down a chain and no one-test iperf3 server is used up)."""
    wanted = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[1].endswith(wanted) and fields[3] == "0A":  # 0A: LISTEN
                    return True
    return False


def wait_until(condition: Callable[[], object], *, timeout: float, what: str, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# --- processes -----------------------------------------------------------------------------------

_PR_SET_PDEATHSIG: Final = 1


def _child_setup(cpus: frozenset[int] | None) -> Callable[[], None]:
    def setup() -> None:
        # Killed with the bench even if the bench itself is killed (SIGKILL) and cannot clean up.
        # (PDEATHSIG fires when the *thread* that forked exits: processes are started from the
        # main thread only.)
        with contextlib.suppress(Exception):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if cpus:
            os.sched_setaffinity(0, cpus)

    return setup


class Proc:
    """A child process this run started, its output in ``log``; stopped by PID."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log: Path,
        *,
        cpus: frozenset[int] | None = None,
        stderr: Path | None = None,
    ) -> None:
        """Start ``argv`` with its output in ``log`` (its stderr in ``stderr`` if given), in a
        session of its own (a Ctrl-C at the terminal reaches the bench only, which stops it), on
        ``cpus`` if given."""
        self.name, self.argv, self.log, self.cpus = name, list(argv), log, cpus
        log.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as files:
            out = files.enter_context(log.open("ab"))
            err = files.enter_context(stderr.open("ab")) if stderr is not None else subprocess.STDOUT
            self.popen = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                start_new_session=True, preexec_fn=_child_setup(cpus),
            )  # fmt: skip

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 10) -> int | None:
        """SIGTERM, then wait up to ``timeout`` seconds; None if it is still running."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self.popen.wait(5)

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __repr__(self) -> str:
        return f"<{self.name} pid {self.pid}>"


# --- the meshgate chain --------------------------------------------------------------------------


def _local_config(
    name: str, service: str, inbound: int, instance: int, outbound: int | None
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "name": name,
        "service": service,
        "inbound": {"address": LOCALHOST, "port": inbound},
        "instances": [{"address": LOCALHOST, "port": instance}],
    }
    if outbound is not None:
        config["outbounds"] = [{"service": "b", "port": outbound, "address": LOCALHOST}]
    return config


def meshgate_specs(pki: Pki, ports: Ports, directory: Path) -> dict[str, Path]:
    """One ``bench.l4_node`` spec file per hop: A (local proxy of service a in zone one, with an
    outbound for b whose one group is zone two's ingress), the ingress of zone two (a route for
    b.two.svc.meshgate to B's inbound), B (local proxy of service b in front of the workload)."""
    roots = [pki.root_pem.decode()]
    b_id = pki.b.spiffe_id

    def identity(leaf: Leaf) -> dict[str, str]:
        return {"chain": leaf.chain_pem.decode(), "key": leaf.key_pem.decode(), "roots": roots[0]}

    cluster_b = {
        "service": "b",
        "identity": b_id,
        "groups": [
            {"zone": ZONE_B, "endpoints": [{"address": LOCALHOST, "port": ports.ingress, "sni": SNI}]}
        ],
    }
    route_b = {"sni": SNI, "service": "b", "endpoints": [{"address": LOCALHOST, "port": ports.b}]}
    unused_instance = ports.workload  # never connected: A's inbound is not part of the chain
    specs: dict[str, dict[str, Any]] = {
        "a": {
            "role": "local",
            "config": _local_config("a-1", "a", ports.a_inbound, unused_instance, ports.a),
            "identity": identity(pki.a),
            "runtime": {"trust_domain": TRUST_DOMAIN, "roots": roots, "clusters": [cluster_b]},
        },
        "ingress": {
            "role": "ingress",
            "zone": ZONE_B,
            "config": {"name": "ingress-1", "listen": {"address": LOCALHOST, "port": ports.ingress}},
            "runtime": {"trust_domain": TRUST_DOMAIN, "roots": roots, "routes": [route_b]},
        },
        "b": {
            "role": "local",
            "config": _local_config("b-1", "b", ports.b, ports.workload, None),
            "identity": identity(pki.b),
            "runtime": {"trust_domain": TRUST_DOMAIN, "roots": roots},
        },
    }
    paths: dict[str, Path] = {}
    for hop, spec in specs.items():
        spec["ready_file"] = str(directory / f"meshgate-{hop}.ready")
        spec["stats_file"] = str(directory / f"meshgate-{hop}.stats.json")
        path = paths[hop] = directory / f"meshgate-{hop}.json"
        path.write_text(json.dumps(spec, indent=2))
        path.chmod(0o600)
    return paths


def meshgate_argv(spec: Path) -> list[str]:
    return [sys.executable, "-m", "bench.l4_node", str(spec)]


# --- the HAProxy chain ---------------------------------------------------------------------------

_HAPROXY_COMMON = """\
global
    nbthread 1
    maxconn 1000
    log stdout format raw local0 info
    ssl-default-bind-options ssl-min-ver TLSv1.2 no-tls-tickets
    ssl-default-bind-ciphers ECDHE+AESGCM:ECDHE+CHACHA20
    ssl-default-server-options ssl-min-ver TLSv1.2 no-tls-tickets
    ssl-default-server-ciphers ECDHE+AESGCM:ECDHE+CHACHA20
    ssl-server-verify required

defaults
    mode tcp
    log global
    log-format "%ci:%cp %ft %b/%s Tw=%Tw Tc=%Tc Tt=%Tt bytes=%B term=%ts ssl=%sslv/%sslc"
    timeout connect 5s
    timeout client 60s
    timeout server 60s
"""


def haproxy_configs(pki: Pki, ports: Ports, directory: Path) -> dict[str, Path]:
    """One configuration file per hop (TCP mode, one thread each; TLS settings as meshgate's
    ``meshgate.pki.tls``: TLS 1.2+, ECDHE with AES-GCM or ChaCha20 for 1.2, OpenSSL's 1.3 suites,
    no session tickets)."""
    bodies = {
        "a": f"""
frontend a_outbound_b
    bind {LOCALHOST}:{ports.a}
    default_backend zone_two_ingress

backend zone_two_ingress
    server ingress {LOCALHOST}:{ports.ingress} ssl crt {pki.a_file} ca-file {pki.root_file} verify required sni str({SNI})
""",
        "ingress": f"""
frontend ingress
    bind {LOCALHOST}:{ports.ingress}
    tcp-request inspect-delay 5s
    tcp-request content accept if {{ req_ssl_hello_type 1 }}
    use_backend service_b if {{ req_ssl_sni -i {SNI} }}

backend service_b
    server b {LOCALHOST}:{ports.b}
""",
        "b": f"""
frontend b_inbound
    bind {LOCALHOST}:{ports.b} ssl crt {pki.b_file} ca-file {pki.root_file} verify required
    default_backend workload

backend workload
    server w {LOCALHOST}:{ports.workload}
""",
    }
    paths: dict[str, Path] = {}
    for hop, body in bodies.items():
        path = paths[hop] = directory / f"haproxy-{hop}.cfg"
        path.write_text(_HAPROXY_COMMON + body)
    return paths


def haproxy_argv(config: Path) -> list[str]:
    return [HAPROXY, "-db", "-f", str(config)]  # -db: foreground, one process (no master)


def haproxy_version() -> str:
    done = subprocess.run([HAPROXY, "-v"], capture_output=True, text=True, check=False)
    return done.stdout.splitlines()[0] if done.stdout else ""


def iperf3_version() -> str:
    done = subprocess.run([IPERF3, "--version"], capture_output=True, text=True, check=False)
    return done.stdout.splitlines()[0] if done.stdout else ""
