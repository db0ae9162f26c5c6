"""The L4 data plane with real processes: a global CP, two zone CPs, local proxies and ingresses
enrolled with join tokens, workloads that record what they receive, and real clients (raw sockets,
``openssl s_client``). One mesh serves the whole module; tests run in file order, the ones that
stop the zone CP last.

Zone ``one`` (Frankfurt) has services a and b; zone ``two`` (New York) has b and c. The app in
zone one talks to a's local proxy's outbound ports for b and c.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import random
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from meshgate.pki.ca import CertificateAuthority, create_root_ca
from meshgate.pki.keys import (
    certificate_from_pem,
    certificate_to_pem,
    private_key_from_pem,
    private_key_to_pem,
)
from tests.support.factories import doc
from tests.support.processes import Admin, GlobalCPProcess, ZoneCPProcess, wait_for
from tests.support.proxies import ProxyProcess, free_port
from tests.support.workloads import Workload, greet
from tests.unit.pki.pki_certs import craft, leaf_for, uri

pytestmark = pytest.mark.slow

INTERVAL = 0.25  # health-check interval of every local proxy here
HEALTH = {"type": "tcp", "interval": INTERVAL, "timeout": 0.25, "rise": 2, "fall": 2}


@dataclass
class Mesh:
    root: Path
    cp: GlobalCPProcess
    admin: Admin
    zones: dict[str, ZoneCPProcess]
    workloads: dict[str, Workload]
    proxies: dict[str, ProxyProcess]
    outbound: dict[str, int]  # service -> the app's port on a's local proxy in zone one
    tokens: dict[tuple[str, str], str] = field(default_factory=dict)

    def token(self, role: str, zone: str) -> str:
        if (role, zone) not in self.tokens:
            self.tokens[(role, zone)] = self.admin.token(role, zone, reusable=True)
        return self.tokens[(role, zone)]

    def local_proxy(self, zone: str, name: str, service: str, workload: str, **extra: Any) -> ProxyProcess:
        config = {
            "name": name, "service": service,
            "inbound": {"address": "127.0.0.1", "port": free_port()},
            "instances": [{"address": "127.0.0.1", "port": self.workloads[workload].port}],
            "health": HEALTH, **extra.pop("config", {}),
        }  # fmt: skip
        proxy = ProxyProcess(
            self.root / name,
            "local",
            self.zones[zone].proxy_url,
            config,
            token=self.token("proxy", zone),
            **extra,
        )
        self.proxies[name] = proxy
        return proxy.start()

    def ingress(self, zone: str, name: str) -> ProxyProcess:
        config = {"name": name, "listen": {"address": "127.0.0.1", "port": free_port()}}
        proxy = ProxyProcess(self.root / name, "ingress", self.zones[zone].proxy_url, config,
                             token=self.token("ingress", zone))  # fmt: skip
        self.proxies[name] = proxy
        return proxy.start()

    def zone_cp_pki(self, zone: str) -> CertificateAuthority:
        """Zone ``zone``'s intermediate CA, from its zone CP's data dir (to forge test certificates)."""
        pki = self.zones[zone].data_dir / "pki"
        root = certificate_from_pem((pki / "root.pem").read_bytes())
        return CertificateAuthority(
            certificate_from_pem((pki / "intermediate.pem").read_bytes()),
            private_key_from_pem((pki / "intermediate.key").read_bytes()),  # type: ignore[arg-type]
            (root,),
        )


def service(name: str) -> dict[str, Any]:
    return doc("Service", name, {"ports": [{"name": "tcp", "port": 8080, "protocol": "tcp"}]})


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    root = tmp_path_factory.mktemp("data-plane")
    cp = GlobalCPProcess(root / "global").start()
    admin = Admin(cp)
    admin.apply(
        doc("Zone", "one", {"region": "eu-central", "location": {"latitude": 50.1, "longitude": 8.7}}),
        doc("Zone", "two", {"region": "us-east", "location": {"latitude": 40.7, "longitude": -74.0}}),
        service("a"), service("b"), service("c"),
    )  # fmt: skip
    zones = {
        z: ZoneCPProcess(root / f"zone-{z}", z, cp.zone_url, admin.token("zone", z)).start()
        for z in ("one", "two")
    }
    workloads = {name: Workload(name).start() for name in ("a-one", "b-one", "b-two", "c-two")}
    mesh = Mesh(root, cp, admin, zones, workloads, {}, {"b": free_port(), "c": free_port()})
    try:
        mesh.ingress("one", "ingress-one")
        mesh.ingress("two", "ingress-two")
        outbounds = [{"service": s, "port": p} for s, p in mesh.outbound.items()]
        mesh.local_proxy("one", "a-1", "a", "a-one", config={"outbounds": outbounds})
        mesh.local_proxy("one", "b-1", "b", "b-one")
        mesh.local_proxy("two", "b-2", "b", "b-two")
        mesh.local_proxy("two", "c-2", "c", "c-two")
        yield mesh
    finally:
        for proxy in mesh.proxies.values():
            proxy.kill()
        for zone in zones.values():
            zone.kill()
        cp.kill()
        for workload in workloads.values():
            workload.stop()


def answers(port: int, line: str = "hello", timeout: float = 5.0) -> str:
    try:
        return greet(port, line, timeout=timeout)
    except OSError as exc:
        return f"error: {exc!r}"


# -- traffic within a zone, and what an inbound refuses ----------------------------------------


def test_an_app_reaches_a_service_in_its_zone_through_the_local_proxies(mesh: Mesh) -> None:
    port = mesh.outbound["b"]
    assert wait_for(lambda: answers(port) == "b-one hello", 20, "b answered from zone one")
    # Every new connection stays in zone one while its instance is healthy.
    assert {answers(port, f"n{i}") for i in range(20)} == {f"b-one n{i}" for i in range(20)}
    assert b"n7\n" in mesh.workloads["b-one"].received
    # Connections and bytes are counted on the outbound listener that carried them.
    a1 = mesh.proxies["a-1"]
    assert a1.metric(f'meshgate_proxy_listener_accepted_total{{listener="outbound/b:{port}"}}') >= 21
    assert a1.metric(f'meshgate_proxy_listener_bytes_out_total{{listener="outbound/b:{port}"}}') >= 21 * 8
    assert not any(b"n7\n" in r for r in mesh.workloads["b-two"].received)


def inbound_port(proxy: ProxyProcess) -> int:
    return int(proxy.config["inbound"]["port"])


def s_client(port: int, cert: Path, key: Path, ca: Path, data: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-cert", str(cert), "-key", str(key),
         "-cert_chain", str(cert.parent / "chain.pem"),
         "-CAfile", str(ca), "-servername", "b.one.svc.meshgate", "-quiet", "-verify_return_error"],
        input=data, capture_output=True, timeout=20, check=False,
    )  # fmt: skip


def write_identity(
    directory: Path, cert: x509.Certificate, chain: tuple[x509.Certificate, ...], key: Any
) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(certificate_to_pem(cert))
    (directory / "chain.pem").write_bytes(b"".join(certificate_to_pem(c) for c in chain))
    key_file.write_bytes(private_key_to_pem(key))
    return cert_file, key_file


def test_an_inbound_listener_refuses_plaintext_foreign_and_ambiguous_identities(mesh: Mesh) -> None:
    b1 = mesh.proxies["b-1"]
    workload = mesh.workloads["b-one"]
    port = inbound_port(b1)
    zone = mesh.zone_cp_pki("one")
    ca_file = mesh.root / "mesh-root.pem"
    ca_file.write_bytes(certificate_to_pem(zone.root))
    td = zone.trust_domain
    before = len(workload.received)

    # Plaintext: the inbound speaks only TLS; nothing reaches the workload.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"plaintext hello\n")
        with contextlib.suppress(ConnectionResetError):
            reply = conn.recv(100)
            assert not reply.startswith(b"b-one"), reply  # a TLS alert at most, then closed

    # A valid mesh certificate gets through (the check below is not vacuous)...
    leaf, key = leaf_for(zone, f"spiffe://{td}/svc/a", now=datetime.now(UTC))
    good = s_client(
        port,
        *write_identity(mesh.root / "good", leaf, zone.presented_chain(leaf)[1:], key),
        ca_file,
        b"openssl ok\n",
    )
    assert b"b-one openssl ok" in good.stdout, good.stderr.decode()[-800:]

    # ...a certificate from another trust domain does not,
    other = create_root_ca("other.example", mesh="default", now=datetime.now(UTC))
    leaf, key = leaf_for(other, "spiffe://other.example/svc/a", now=datetime.now(UTC))
    foreign = s_client(
        port, *write_identity(mesh.root / "foreign", leaf, (), key), ca_file, b"foreign hello\n"
    )
    assert b"foreign hello" not in foreign.stdout

    # ...nor one of our mesh with two URI SANs.
    now = datetime.now(UTC)
    leaf, key = craft(
        issuer=zone, sans=[uri(f"spiffe://{td}/svc/a"), uri(f"spiffe://{td}/svc/b")],
        not_before=now - timedelta(minutes=5), not_after=now + timedelta(hours=1),
        extra=[(x509.AuthorityKeyIdentifier.from_issuer_public_key(zone.key.public_key()), False)],
    )  # fmt: skip
    two = s_client(
        port,
        *write_identity(mesh.root / "two-sans", leaf, zone.presented_chain(leaf)[1:], key),
        ca_file,
        b"two sans\n",
    )
    assert b"two sans" not in two.stdout, two.stderr.decode()[-600:]

    received = b"".join(workload.received[before:])
    assert b"openssl ok" in received
    for refused in (b"plaintext hello", b"foreign hello", b"two sans"):
        assert refused not in received
    # Counted: failed handshakes, and the two-SAN certificate refused after its handshake.
    assert b1.metric('meshgate_proxy_listener_peer_rejected_total{listener="inbound"}') >= 1
    failures = 'meshgate_proxy_listener_tls_handshake_failures_total{listener="inbound"}'
    wait_for(lambda: b1.metric(failures) >= 1, 20, "failed handshakes counted")


# -- across zones, through the ingress ---------------------------------------------------------


def test_a_service_only_in_the_other_zone_is_reached_through_its_ingress(mesh: Mesh) -> None:
    ingress = mesh.proxies["ingress-two"]
    before = ingress.metric('meshgate_proxy_listener_accepted_total{listener="ingress"}')
    port = mesh.outbound["c"]
    assert wait_for(lambda: answers(port) == "c-two hello", 20, "c answered from zone two")
    assert [answers(port, f"x{i}") for i in range(5)] == [f"c-two x{i}" for i in range(5)]
    assert ingress.metric('meshgate_proxy_listener_accepted_total{listener="ingress"}') >= before + 6


def server_identity(port: int, sni: str, mesh: Mesh, line: bytes) -> tuple[str, bytes]:
    """(the SPIFFE ID of the certificate served on ``port`` for ``sni``, the answer to ``line``),
    with a valid mesh client certificate."""
    zone = mesh.zone_cp_pki("one")
    leaf, key = leaf_for(zone, f"spiffe://{zone.trust_domain}/svc/a", now=datetime.now(UTC))
    cert, key_file = write_identity(mesh.root / "client-a", leaf, zone.presented_chain(leaf)[1:], key)
    ca_file = mesh.root / "client-a" / "root.pem"
    ca_file.write_bytes(certificate_to_pem(zone.root))
    done = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-cert", str(cert), "-key", str(key_file),
         "-cert_chain", str(cert.parent / "chain.pem"), "-CAfile", str(ca_file), "-servername", sni,
         "-showcerts", "-verify_return_error", "-ign_eof"],
        input=line, capture_output=True, timeout=20, check=False,
    )  # fmt: skip
    pem = done.stdout.split(b"-----END CERTIFICATE-----")[0] + b"-----END CERTIFICATE-----\n"
    pem = pem[pem.index(b"-----BEGIN CERTIFICATE-----") :]
    san = certificate_from_pem(pem).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    return ",".join(uris), done.stdout


def test_the_ingress_passes_tls_through_end_to_end(mesh: Mesh) -> None:
    """Through zone two's ingress, the TLS server is c's local proxy itself: the certificate is
    c's, and the answer comes back over that session. The ingress holds no key for it."""
    ingress_port = int(mesh.proxies["ingress-two"].config["listen"]["port"])
    identity, output = server_identity(ingress_port, "c.two.svc.meshgate", mesh, b"through\n")
    assert identity.endswith("/svc/c")
    assert b"c-two through" in output


BAD_HELLOS = {
    "plaintext": b"GET / HTTP/1.1\r\nHost: c.two.svc.meshgate\r\n\r\n",
    "truncated": None,  # filled in from a real ClientHello below
    "garbage record": b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00",
    "huge record": b"\x16\x03\x01\xff\xff" + b"\x01" * 64,
}


def client_hello(sni: str | None) -> bytes:
    """The first flight of a real TLS client (Python's ssl) for ``sni``."""
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=sni)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def refused_by(port: int, data: bytes, *, close: bool = False) -> bool:
    """True if the connection is closed without a byte back."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as conn:
        conn.sendall(data)
        if close:
            conn.shutdown(socket.SHUT_WR)
        try:
            return conn.recv(1) == b""
        except ConnectionResetError:
            return True


def test_the_ingress_refuses_bad_hellos_and_wrong_names_and_keeps_serving(mesh: Mesh) -> None:
    ingress = mesh.proxies["ingress-two"]
    port = int(ingress.config["listen"]["port"])
    hello = client_hello("c.two.svc.meshgate")
    cases = dict(BAD_HELLOS, truncated=hello[: len(hello) // 2])
    for name, data in cases.items():
        assert data is not None
        assert refused_by(port, data, close=True), name
    for sni in (
        "c.one.svc.meshgate",
        "c.two.svc.meshgate.evil.example",
        "example.com",
        "nope.two.svc.meshgate",
    ):
        assert refused_by(port, client_hello(sni)), sni
    assert refused_by(port, client_hello(None))
    refused = {
        k: v for k, v in ingress.metrics().items() if k.startswith("meshgate_proxy_listener_refused_total")
    }
    reasons = {k.split('reason="')[1].rstrip('"}') for k, v in refused.items() if v > 0}
    assert {"malformed_client_hello", "truncated", "bad_sni", "unknown_service", "no_sni"} <= reasons, refused
    # Fuzz: mutations of a real hello, many at once; the ingress answers none and stays up.
    rng = random.Random(4)

    def mutated(i: int) -> bool:
        data = bytearray(hello)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        cut = rng.randint(1, len(data))
        with socket.create_connection(("127.0.0.1", port), timeout=15) as conn:
            conn.sendall(bytes(data[:cut]))
            conn.shutdown(socket.SHUT_WR)
            try:
                return conn.recv(1) == b""
            except ConnectionResetError:
                return True

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        closed = list(pool.map(mutated, range(300)))
    assert sum(closed) >= 290  # a mutation can leave a valid hello for c: then c's TLS answers
    assert ingress.proc is not None
    assert ingress.proc.poll() is None
    assert answers(mesh.outbound["c"], "still") == "c-two still"


# -- failover --------------------------------------------------------------------------------------


def test_new_connections_fail_over_to_the_other_zone_and_come_back(mesh: Mesh) -> None:
    port = mesh.outbound["b"]
    assert answers(port) == "b-one hello"
    b_one = mesh.workloads["b-one"]
    b_one.stop()  # returns once its listening socket is closed
    stopped = time.monotonic()
    # Within two health-check intervals, new connections are served by zone two.
    first = wait_for(lambda: answers(port, "moved").startswith("b-two") and time.monotonic(), 10, "failover")
    took = first - stopped
    print(f"failover to zone two took {took:.3f} s (health-check interval {INTERVAL} s)")
    assert took <= 2 * INTERVAL + 0.3, f"failover took {took:.2f} s"
    assert {answers(port, f"m{i}") for i in range(10)} == {f"b-two m{i}" for i in range(10)}
    # The instance returns: traffic comes back to zone one.
    mesh.workloads["b-one"] = Workload("b-one", port=b_one.port).start()
    wait_for(lambda: answers(port, "back") == "b-one back", 15, "traffic back in zone one")
    assert {answers(port, f"r{i}") for i in range(10)} == {f"b-one r{i}" for i in range(10)}


# -- certificate rotation under load, and draining -------------------------------------------------


def test_certificates_of_seconds_rotate_under_load_without_a_failed_connection(mesh: Mesh) -> None:
    """A second client proxy of a and a second proxy of b's instance, both with 3-second
    certificates; clients connect without pause while both rotate several times."""
    out = free_port()
    a2 = mesh.local_proxy("one", "a-2", "a", "a-one", cert_ttl=3.0,
                          config={"outbounds": [{"service": "b", "port": out}]})  # fmt: skip
    b3 = mesh.local_proxy("one", "b-3", "b", "b-one", cert_ttl=3.0)
    rotations = "meshgate_proxy_certificate_rotations"
    try:
        assert wait_for(lambda: answers(out) == "b-one hello", 20, "a-2 serves")
        held = socket.create_connection(("127.0.0.1", out), timeout=10)  # opened before any rotation
        stop = threading.Event()
        results: list[str] = []

        def client(n: int) -> None:
            i = 0
            while not stop.is_set():
                results.append(answers(out, f"{n}-{i}"))
                i += 1

        threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        try:
            wait_for(lambda: min(a2.metric(rotations), b3.metric(rotations)) >= 3, 30, "three rotations each")
        finally:
            stop.set()
            for thread in threads:
                thread.join(10)
        failed = [r for r in results if not r.startswith("b-one ")]
        print(
            f"{len(results)} connections during {a2.metric(rotations):.0f} and {b3.metric(rotations):.0f} rotations"
        )
        assert not failed, failed[:5]
        assert len(results) > 50
        # The connection opened before the rotations still works.
        held.sendall(b"held\n")
        assert held.recv(100) == b"b-one held\n"
        held.close()
        # b-3 took part: the zone's two proxies of b shared the load.
        assert b3.metric('meshgate_proxy_listener_accepted_total{listener="inbound"}') > 0
    finally:
        for proxy in (a2, b3):
            assert proxy.stop() == 0
            del mesh.proxies[proxy.name]


def test_sigterm_lets_open_connections_finish_and_refuses_new_ones(mesh: Mesh) -> None:
    out = free_port()
    a3 = mesh.local_proxy("one", "a-3", "a", "a-one", config={"outbounds": [{"service": "b", "port": out}]},
                          drain_timeout=20.0)  # fmt: skip
    assert wait_for(lambda: answers(out) == "b-one hello", 20, "a-3 serves")
    open_conn = socket.create_connection(("127.0.0.1", out), timeout=10)
    wait_for(
        lambda: a3.metric(f'meshgate_proxy_listener_active{{listener="outbound/b:{out}"}}') == 1, 10, "open"
    )
    assert a3.proc is not None
    a3.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: a3.admin("/readyz")[0] in (503, 0), 10, "not ready any more")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", out), timeout=5).close()
    assert a3.proc.poll() is None  # still draining: the open connection is not done
    open_conn.sendall(b"last\n")
    assert open_conn.recv(100) == b"b-one last\n"
    open_conn.close()
    assert a3.wait_exit(15) == 0
    del mesh.proxies["a-3"]


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def test_workers_share_the_listener_and_stop_together(mesh: Mesh) -> None:
    config = {"name": "ingress-two-w", "listen": {"address": "127.0.0.1", "port": free_port()}}
    proxy = ProxyProcess(mesh.root / "ingress-two-w", "ingress", mesh.zones["two"].proxy_url, config,
                         token=mesh.token("ingress", "two"), workers=2).start()  # fmt: skip
    mesh.proxies[proxy.name] = proxy
    assert proxy.proc is not None
    workers = wait_for(
        lambda: len(children_of(proxy.proc.pid)) == 2 and children_of(proxy.proc.pid), 10, "2 workers"
    )
    port = int(config["listen"]["port"])  # type: ignore[index]
    wait_for(
        lambda: "c-two" in server_identity(port, "c.two.svc.meshgate", mesh, b"w\n")[1].decode(), 20, "routes"
    )
    for i in range(6):
        identity, output = server_identity(port, "c.two.svc.meshgate", mesh, f"w{i}\n".encode())
        assert identity.endswith("/svc/c")
        assert f"c-two w{i}".encode() in output
    assert proxy.stop() == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
    del mesh.proxies[proxy.name]


# -- the zone CP away ------------------------------------------------------------------------------


def test_proxies_serve_without_their_zone_cp_restart_from_disk_and_resync(mesh: Mesh) -> None:
    zone_cp, a1 = mesh.zones["one"], mesh.proxies["a-1"]
    port = mesh.outbound["b"]
    version = a1.metric("meshgate_proxy_config_version")
    zone_cp.kill()
    wait_for(lambda: a1.metric("meshgate_proxy_zone_cp_connected") == 0, 15, "a-1 noticed")
    assert answers(port, "alone") == "b-one alone"
    assert answers(mesh.outbound["c"], "alone") == "c-two alone"
    # Restarted with the zone CP down: it serves from its data dir (no token needed).
    assert a1.stop() == 0
    a1.token = None
    a1.start()
    assert answers(port, "restarted") == "b-one restarted"
    assert answers(mesh.outbound["c"], "restarted") == "c-two restarted"
    assert a1.metric("meshgate_proxy_config_version") == version
    # The zone CP returns: the proxy reconnects by itself and takes new configuration.
    zone_cp.token = None
    zone_cp.start()
    wait_for(lambda: a1.metric("meshgate_proxy_zone_cp_connected") == 1, 30, "a-1 reconnected")
    mesh.admin.apply(service("d"))
    wait_for(lambda: a1.metric("meshgate_proxy_config_version") > version, 30, "new configuration at a-1")
    assert answers(port, "again") == "b-one again"
