"""The HTTP/1.1 engine with real processes: a global CP, one zone CP, local proxies enrolled with
join tokens, a recording HTTP workload, and real clients (curl, wrk, raw sockets for hostile
input). One mesh serves the whole module.

Zone ``one`` has the HTTP services ``a`` (the caller), ``web`` (the recording workload behind its
local proxy ``web-1``), ``down`` (a workload that is stopped in a test; its proxy checks health
only once a minute, so it still counts it healthy) and ``ghost`` (no proxy at all). The app talks
to a's local proxy ``a-1``: an outbound port per service and a Host-routed ``meshOutbound``. Both
a-1 and web-1 have a 1 s header timeout; web-1 gives its workload 1.5 s to answer; both write a
JSON access log of every request.

Tests run in file order (``-p no:randomly``): the metrics test counts what the earlier ones did.
Figures (upload and download RSS, KiB per idle connection, wrk req/s and CPU per request) are
printed: run with ``-s`` to see them.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import random
import re
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from meshgate.pki.ca import CertificateAuthority
from meshgate.pki.keys import (
    certificate_from_pem,
    certificate_to_pem,
    private_key_from_pem,
    private_key_to_pem,
)
from tests.support.factories import doc
from tests.support.http_workload import (
    HttpWorkload,
    Reader,
    Received,
    Response,
    closed_within,
    cpu_seconds,
    frame,
    read_frame,
    request,
    rss_kib,
    ws_accept,
)
from tests.support.processes import Admin, GlobalCPProcess, ZoneCPProcess, wait_for
from tests.support.proxies import ProxyProcess, listen_port
from tests.unit.pki.pki_certs import leaf_for
from zones.state import ProxyState

pytestmark = pytest.mark.slow

HEALTH = {"type": "tcp", "interval": 0.5, "timeout": 0.5, "rise": 1, "fall": 2}
HEADER_TIMEOUT = 1.0  # a-1's and web-1's
UPSTREAM_TIMEOUT = 1.5  # web-1's (a-1 waits longer: web-1 answers the 504)


@dataclass
class Mesh:
    root: Path
    cp: GlobalCPProcess
    admin: Admin
    zone: ZoneCPProcess
    workloads: dict[str, HttpWorkload]
    proxies: dict[str, ProxyProcess] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)  # a-1's outbound ports: web, ghost, down, mesh

    @property
    def web(self) -> HttpWorkload:
        return self.workloads["web"]

    @property
    def a1(self) -> ProxyProcess:
        return self.proxies["a-1"]

    def local_proxy(self, name: str, service: str, workload: str, token: str, **config: Any) -> ProxyProcess:
        full = {
            "name": name, "service": service,
            "inbound": {"address": "127.0.0.1", "port": listen_port()},
            "instances": [{"address": "127.0.0.1", "port": self.workloads[workload].port}],
            "health": HEALTH, **config,
        }  # fmt: skip
        proxy = ProxyProcess(self.root / name, "local", self.zone.proxy_url, full, token=token)
        proxy.admin_port = listen_port()
        proxy.config["admin"] = f"127.0.0.1:{proxy.admin_port}"
        self.proxies[name] = proxy
        return proxy.start(wait_ready=False)


def http_service(name: str) -> dict[str, Any]:
    return doc("Service", name, {"ports": [{"name": "http", "port": 8080, "protocol": "http"}]})


def curl(*args: str, input: bytes | None = None, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["curl", "-sS", "--max-time", str(timeout), *args],
        input=input, capture_output=True, timeout=timeout + 10, check=False,
    )  # fmt: skip


def get(port: int, path: str = "/", host: str = "web") -> Response:
    return request(port, f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())


def status_of(port: int, path: str = "/", host: str = "web") -> int:
    try:
        return get(port, path, host).status
    except OSError:
        return 0


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    root = tmp_path_factory.mktemp("http-engine")
    cp = GlobalCPProcess(root / "global").start()
    admin = Admin(cp)
    admin.apply(
        doc("Zone", "one", {"region": "eu-central"}),
        *(http_service(s) for s in ("a", "web", "down", "ghost")),
    )
    workloads = {name: HttpWorkload(name).start() for name in ("a", "web", "down")}
    zone = ZoneCPProcess(root / "zone-one", "one", cp.zone_url, admin.token("zone", "one")).start()
    mesh = Mesh(root, cp, admin, zone, workloads)
    try:
        token = admin.token("proxy", "one", reusable=True)
        mesh.ports = {name: listen_port() for name in ("web", "ghost", "down", "mesh")}
        http = {"headerTimeout": HEADER_TIMEOUT}
        mesh.local_proxy(
            "a-1", "a", "a", token,
            outbounds=[{"service": "web", "port": mesh.ports["web"]},
                       {"service": "ghost", "port": mesh.ports["ghost"], "protocol": "http"},
                       {"service": "down", "port": mesh.ports["down"]}],
            meshOutbound={"port": mesh.ports["mesh"]},
            http={**http, "upstreamTimeout": 5, "accessLog": {"path": str(root / "a-access.log")}},
        )  # fmt: skip
        mesh.local_proxy(
            "web-1", "web", "web", token,
            http={**http, "upstreamTimeout": UPSTREAM_TIMEOUT, "accessLog": {"path": str(root / "web-access.log")}},
        )  # fmt: skip
        # Health checked once a minute: when its workload stops, the proxy still thinks it healthy.
        mesh.local_proxy("down-1", "down", "down", token, health={**HEALTH, "interval": 60, "fall": 5})
        for proxy in mesh.proxies.values():
            wait_for(proxy.ready, 30, f"proxy {proxy.name} ready ({proxy.log})")
        for service in ("web", "down"):
            wait_for(lambda s=service: status_of(mesh.ports[s]) == 200, 30, f"{service} reached through a-1")
        yield mesh
    finally:
        for proxy in mesh.proxies.values():
            proxy.kill()
        zone.kill()
        cp.kill()
        for workload in workloads.values():
            workload.stop()


# -- strict parsing: refused at the app-facing outbound, nothing reaches the workload -------------

HEAD = b"Host: web\r\n"
REFUSED = {
    # rule: (request, status)
    "conflicting-content-length": (b"POST /x HTTP/1.1\r\n" + HEAD + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400),
    "invalid-content-length": (b"POST /x HTTP/1.1\r\n" + HEAD + b"Content-Length: 5x\r\n\r\nhello", 400),
    "negative-content-length": (b"POST /x HTTP/1.1\r\n" + HEAD + b"Content-Length: -5\r\n\r\nhello", 400),
    "transfer-encoding-not-ending-in-chunked": (
        b"POST /x HTTP/1.1\r\n" + HEAD + b"Transfer-Encoding: chunked, gzip\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400),
    "unknown-transfer-encoding": (b"POST /x HTTP/1.1\r\n" + HEAD + b"Transfer-Encoding: gzip\r\n\r\nhello", 400),
    "content-length-with-transfer-encoding": (
        b"POST /x HTTP/1.1\r\n" + HEAD + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400),
    "obs-fold": (b"GET /x HTTP/1.1\r\n" + HEAD + b"X-Folded: a\r\n b\r\n\r\n", 400),
    "bare-cr": (b"GET /x HTTP/1.1\r\n" + HEAD + b"X-A: a\rb\r\n\r\n", 400),
    "bare-lf": (b"GET /x HTTP/1.1\n" + b"Host: web\nX-A: b\n\n", 400),
    "nul-in-value": (b"GET /x HTTP/1.1\r\n" + HEAD + b"X-A: a\x00b\r\n\r\n", 400),
    "control-char-in-value": (b"GET /x HTTP/1.1\r\n" + HEAD + b"X-A: a\x01b\r\n\r\n", 400),
    "bad-char-in-field-name": (b"GET /x HTTP/1.1\r\n" + HEAD + b"X@A: b\r\n\r\n", 400),
    "whitespace-before-colon": (b"GET /x HTTP/1.1\r\n" + HEAD + b"X-A : b\r\n\r\n", 400),
    "missing-host": (b"GET /x HTTP/1.1\r\nX-A: b\r\n\r\n", 400),
    "duplicate-host": (b"GET /x HTTP/1.1\r\n" + HEAD + b"Host: other\r\n\r\n", 400),
    "invalid-host": (b"GET /x HTTP/1.1\r\nHost: web@evil\r\n\r\n", 400),
    "invalid-host-port": (b"GET /x HTTP/1.1\r\nHost: web:80:80\r\n\r\n", 400),
    "invalid-chunk-size": (
        b"POST /x HTTP/1.1\r\n" + HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 400),
    "http-2.0": (b"GET /x HTTP/2.0\r\n" + HEAD + b"\r\n", 505),
    "http-1.2": (b"GET /x HTTP/1.2\r\n" + HEAD + b"\r\n", 505),
    "http-0.9": (b"GET /x\r\n\r\n", 505),
    "request-line-too-long": (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n" + HEAD + b"\r\n", 414),
    "header-block-over-60k": (
        b"GET /x HTTP/1.1\r\n" + HEAD + b"".join(b"X-Big-%d: %s\r\n" % (i, b"v" * 8000) for i in range(8)) + b"\r\n", 431),
    "more-than-100-headers": (
        b"GET /x HTTP/1.1\r\n" + HEAD + b"".join(b"X-H-%d: v\r\n" % i for i in range(101)) + b"\r\n", 431),
    "headers-not-in-time": (b"GET /x HTTP/1.1\r\n" + HEAD + b"X-Never: ends", 408),
}  # fmt: skip


def barrier(mesh: Mesh) -> Received:
    """A valid request through a-1 and web-1 that the workload answers: once it arrived, anything
    an earlier request had made the proxies send would have arrived too."""
    marker = f"/barrier-{uuid.uuid4().hex}"
    assert get(mesh.ports["web"], marker).status == 200
    (received,) = mesh.web.find(lambda r: r.target == marker)
    return received


@pytest.mark.parametrize(("data", "status"), list(REFUSED.values()), ids=list(REFUSED))
def test_a_malformed_request_is_refused_the_connection_closed_and_nothing_forwarded(
    mesh: Mesh, data: bytes, status: int
) -> None:
    before = mesh.web.snapshot()
    with socket.create_connection(("127.0.0.1", mesh.ports["web"]), timeout=10) as sock:
        sock.sendall(data)
        response = Reader(sock, timeout=HEADER_TIMEOUT + 5).response()
        assert response.status == status, response
        assert response.header("connection") == "close"
        assert "request id: " in response.text
        assert closed_within(sock, 3), "the proxy kept the connection open"
    ok = barrier(mesh)
    # The workload received the barrier request and nothing else.
    assert mesh.web.since(before) == [ok]
    assert mesh.web.snapshot()[1] - before[1] == len(ok.raw_head)


SEEDS = (
    b"POST /upload HTTP/1.1\r\nHost: web\r\nContent-Length: 5\r\n\r\nhelloGET /second HTTP/1.1\r\nHost: web\r\n\r\n",
    b"POST /upload HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    b"GET /second HTTP/1.1\r\nHost: web\r\n\r\n",
    b"GET /echo HTTP/1.1\r\nHost: web\r\nConnection: keep-alive, X-A\r\nX-A: 1\r\nExpect: 100-continue\r\n\r\n",
)
FUZZ_CASES = 300


def mutate(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(out))
        choice = rng.random()
        if choice < 0.4:
            out[at] = rng.choice(b"\r\n :\t\x00,;0123456789abcdefxX-" + bytes([rng.randrange(256)]))
        elif choice < 0.7:
            del out[at]
        else:
            out.insert(at, rng.choice(b"\r\n :\t,;0f-"))
    return bytes(out)


def test_mutated_requests_always_end_and_leave_the_proxies_serving(mesh: Mesh) -> None:
    """Mutations of valid pipelined requests, sent and half-closed, 8 at a time: every connection
    ends (answered, refused or closed) within seconds, nothing stays in flight, the proxies serve on."""
    rng = random.Random(7)
    cases = [mutate(rng, rng.choice(SEEDS)) for _ in range(FUZZ_CASES)]

    def outcome(data: bytes) -> str:
        with socket.create_connection(("127.0.0.1", mesh.ports["web"]), timeout=10) as sock:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            answer = b""
            sock.settimeout(HEADER_TIMEOUT + 5)
            try:
                while chunk := sock.recv(65536):
                    answer += chunk
            except ConnectionResetError:
                return "reset"
            except TimeoutError:
                return f"hung: {data!r}"
            return answer[:12].decode("latin-1") or "closed"

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(outcome, cases))
    counts: dict[str, int] = {}
    for result in outcomes:
        counts[result] = counts.get(result, 0) + 1
    print(f"{FUZZ_CASES} mutated requests: {counts}")
    assert not [o for o in outcomes if o.startswith("hung")]
    assert counts.get("HTTP/1.1 400", 0) > 0
    assert counts.get("HTTP/1.1 200", 0) > 0
    assert get(mesh.ports["web"], "/after-fuzz").status == 200
    in_flight = 'meshgate_http_requests_in_flight{direction="%s",service="web"}'
    wait_for(lambda: mesh.a1.metric(in_flight % "outbound") == 0, 5, "nothing in flight at a-1")
    wait_for(
        lambda: mesh.proxies["web-1"].metric(in_flight % "inbound") == 0, 5, "nothing in flight at web-1"
    )


# -- forwarding ------------------------------------------------------------------------------------


def test_curl_reuses_one_connection_and_the_proxies_pool_theirs(mesh: Mesh) -> None:
    tag = uuid.uuid4().hex
    url = f"http://127.0.0.1:{mesh.ports['web']}"
    done = curl("-w", "%{http_code} %{num_connects}\n", "-o", "/dev/null", f"{url}/ka-1-{tag}",
                "-o", "/dev/null", f"{url}/ka-2-{tag}")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().split("\n")[:2] == ["200 1", "200 0"]  # the second URL: no new connect
    received = mesh.web.find(lambda r: tag in r.target)
    assert [r.path for r in received] == [f"/ka-1-{tag}", f"/ka-2-{tag}"]
    connections = {r.conn for r in received}
    print(f"workload connections for 2 requests: {len(connections)}")
    assert len(connections) == 1  # web-1 sent both on one pooled connection


def echo(mesh: Mesh, *headers: str, port: str = "web") -> tuple[dict[str, Any], Received]:
    """GET /echo through a-1 and web-1 with curl and ``headers``; (its JSON, the workload's record)."""
    tag = uuid.uuid4().hex
    args = [a for h in headers for a in ("-H", h)]
    done = curl(*args, f"http://127.0.0.1:{mesh.ports[port]}/echo?tag={tag}")
    assert done.returncode == 0, done.stderr
    (received,) = mesh.web.find(lambda r: r.target == f"/echo?tag={tag}")
    return json.loads(done.stdout), received


def test_the_workload_sees_the_callers_verified_identity_never_a_forged_one(mesh: Mesh) -> None:
    identity = ProxyState(mesh.a1.data_dir).load_identity()
    assert identity is not None
    expected = identity.spiffe_id
    assert re.fullmatch(r"spiffe://[^/]+/svc/a", expected)
    _, plain = echo(mesh)
    assert plain.all("x-meshgate-client-identity") == [expected]
    forged = "spiffe://evil.example/svc/admin"
    _, received = echo(mesh, f"X-Meshgate-Client-Identity: {forged}", f"x-meshgate-client-identity: {forged}")
    assert received.all("x-meshgate-client-identity") == [expected]
    assert forged not in received.raw_head.decode()


def mesh_client(mesh: Mesh, spiffe_id: str) -> ssl.SSLContext:
    """A TLS client context with a mesh certificate for ``spiffe_id`` (from zone one's CA)."""
    pki = mesh.zone.data_dir / "pki"
    root = certificate_from_pem((pki / "root.pem").read_bytes())
    zone = CertificateAuthority(
        certificate_from_pem((pki / "intermediate.pem").read_bytes()),
        private_key_from_pem((pki / "intermediate.key").read_bytes()),
        (root,),
    )
    leaf, key = leaf_for(zone, spiffe_id, now=datetime.now(UTC))
    directory = mesh.root / f"client-{uuid.uuid4().hex[:8]}"
    directory.mkdir()
    (directory / "cert.pem").write_bytes(b"".join(certificate_to_pem(c) for c in zone.presented_chain(leaf)))
    (directory / "key.pem").write_bytes(private_key_to_pem(key))
    context = ssl.create_default_context(cadata=certificate_to_pem(root).decode())
    context.check_hostname = False  # the server is checked by its SPIFFE ID in the mesh, not a DNS name
    context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    return context


def test_the_inbound_sets_the_peers_identity_over_a_forged_one_and_refuses_bad_framing(mesh: Mesh) -> None:
    """Straight to web-1's inbound with a valid mesh certificate of a: what an authenticated but
    hostile peer sends is checked there too."""
    identity = ProxyState(mesh.a1.data_dir).load_identity()
    assert identity is not None
    context = mesh_client(mesh, identity.spiffe_id)
    port = int(mesh.proxies["web-1"].config["inbound"]["port"])
    td = identity.spiffe_id.split("/")[2]

    def exchange(data: bytes) -> tuple[Response, bool]:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname="web.one.svc.meshgate") as tls,
        ):
            tls.sendall(data)
            response = Reader(tls).response()
            return response, closed_within(tls, 3)

    tag = uuid.uuid4().hex
    forged = f"spiffe://{td}/svc/admin"
    response, _ = exchange(
        f"GET /echo?tag={tag} HTTP/1.1\r\nHost: web\r\nX-Meshgate-Client-Identity: {forged}\r\n\r\n".encode()
    )
    assert response.status == 200
    (received,) = mesh.web.find(lambda r: r.target == f"/echo?tag={tag}")
    assert received.all("x-meshgate-client-identity") == [identity.spiffe_id]
    before = mesh.web.snapshot()
    response, closed = exchange(REFUSED["conflicting-content-length"][0])
    assert (response.status, closed) == (400, True)
    response, closed = exchange(REFUSED["obs-fold"][0])
    assert (response.status, closed) == (400, True)
    assert mesh.web.since(before) == []


def test_hop_by_hop_fields_are_removed_and_forwarding_fields_added(mesh: Mesh) -> None:
    body, received = echo(
        mesh,
        "Connection: keep-alive, X-Secret, X-Other-Secret",
        "X-Secret: nominated by Connection",
        "X-Other-Secret: also nominated",
        "Keep-Alive: timeout=5",
        "Proxy-Connection: keep-alive",
        "Proxy-Authorization: Basic c2VjcmV0",
        "TE: trailers",
        "Trailer: X-Checksum",
        "Upgrade: h2c",
        "X-Kept: yes",
    )
    names = received.names
    for dropped in ("connection", "x-secret", "x-other-secret", "keep-alive", "proxy-connection",
                    "proxy-authorization", "te", "trailer", "upgrade", "transfer-encoding"):  # fmt: skip
        assert dropped not in names, received.raw_head
    assert received.header("x-kept") == "yes"
    assert body["headers"] == [list(h) for h in received.headers]
    # Both proxies appended the address they got the request from (all on 127.0.0.1 here).
    assert received.header("x-forwarded-for") == "127.0.0.1, 127.0.0.1"
    assert received.header("x-forwarded-proto") == "http"
    assert received.header("forwarded") == "for=127.0.0.1;proto=http, for=127.0.0.1;proto=http"
    request_id = received.header("x-request-id")
    assert request_id
    assert re.fullmatch(r"[0-9a-f]{12}-[0-9a-f]+", request_id)
    # And in the response: the workload's hop-by-hop fields do not reach the app.
    done = curl("-i", f"http://127.0.0.1:{mesh.ports['web']}/hop")
    head, _, text = done.stdout.decode().partition("\r\n\r\n")
    fields = {line.split(":")[0].lower() for line in head.split("\r\n")[1:]}
    assert text == "hop\n"
    assert "x-resp-kept" in fields
    for dropped in ("connection", "x-resp-secret", "keep-alive", "proxy-authenticate", "proxy-connection",
                    "trailer", "upgrade"):  # fmt: skip
        assert dropped not in fields, head
    # A caller's own request id is kept end to end.
    _, mine = echo(mesh, "X-Request-Id: caller-chosen-id.1")
    assert mine.all("x-request-id") == ["caller-chosen-id.1"]


def test_a_connection_header_naming_content_length_cannot_smuggle_a_request(mesh: Mesh) -> None:
    """``Connection: Content-Length`` must not strip the length the body is framed by: the upstream
    would read the body as a request of its own, one that no proxy saw or accounted for."""
    tag = uuid.uuid4().hex
    inner = f"GET /smuggled-{tag} HTTP/1.1\r\nHost: web\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", mesh.ports["web"]), timeout=10) as sock:
        sock.sendall(
            b"POST /upload HTTP/1.1\r\nHost: web\r\nContent-Length: %d\r\nConnection: keep-alive, Content-Length\r\n\r\n"
            % len(inner)
            + inner
        )
        reader = Reader(sock)
        response = reader.response()
        assert response.json() == {"bytes": len(inner), "sha256": hashlib.sha256(inner).hexdigest()}
        sock.sendall(f"GET /after-{tag} HTTP/1.1\r\nHost: web\r\n\r\n".encode())
        assert reader.response().text == f"ok /after-{tag}\n"
    assert [r.path for r in mesh.web.find(lambda r: tag in r.target)] == [f"/after-{tag}"]
    (upload,) = mesh.web.find(lambda r: r.body_start == inner)
    assert upload.header("content-length") == str(len(inner))


def test_the_mesh_outbound_routes_by_host_and_answers_404_for_unknown_hosts(mesh: Mesh) -> None:
    body, received = echo(mesh, "Host: web.mesh", port="mesh")
    assert received.header("host") == "web.mesh"
    assert body["method"] == "GET"
    port = str(mesh.ports["mesh"])
    _, with_port = echo(mesh, f"Host: WEB.mesh:{port}", port="mesh")
    assert with_port.header("host") == f"WEB.mesh:{port}"
    for host in ("nope.mesh", "web", "web.mesh.evil.example"):
        before = mesh.web.snapshot()
        done = curl("-i", "-H", f"Host: {host}", f"http://127.0.0.1:{port}/echo")
        assert done.returncode == 0, done.stderr
        head, _, text = done.stdout.decode().partition("\r\n\r\n")
        assert head.startswith("HTTP/1.1 404 "), done.stdout
        assert f"no service for host {host.lower()!r}" in text
        assert "request id: " in text
        assert mesh.web.since(before) == []


def test_an_absolute_form_target_is_routed_by_its_authority(mesh: Mesh) -> None:
    tag = uuid.uuid4().hex
    response = request(
        mesh.ports["mesh"], f"GET http://web.mesh/echo?tag={tag} HTTP/1.1\r\nHost: elsewhere\r\n\r\n".encode()
    )
    assert response.status == 200
    (received,) = mesh.web.find(lambda r: r.target == f"/echo?tag={tag}")
    assert received.all("host") == ["web.mesh"]
    assert received.raw_head.startswith(f"GET /echo?tag={tag} HTTP/1.1\r\n".encode())


def test_pipelined_requests_are_answered_in_order(mesh: Mesh) -> None:
    tag = uuid.uuid4().hex
    requests = [
        f"GET /slow?ms=300&tag={tag}&n=1 HTTP/1.1\r\nHost: web\r\n\r\n".encode(),
        f"POST /upload?tag={tag}&n=2 HTTP/1.1\r\nHost: web\r\nContent-Length: 5\r\n\r\nhello".encode(),
        f"GET /chunked?n=2&tag={tag} HTTP/1.1\r\nHost: web\r\n\r\n".encode(),
        f"GET /status?code=204&tag={tag} HTTP/1.1\r\nHost: web\r\n\r\n".encode(),
        f"POST /upload?tag={tag}&n=5 HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n"
        "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n".encode(),
        f"GET /last?tag={tag} HTTP/1.1\r\nHost: web\r\n\r\n".encode(),
    ]
    with socket.create_connection(("127.0.0.1", mesh.ports["web"]), timeout=10) as sock:
        sock.sendall(b"".join(requests))  # one send: the proxy reads them together
        reader = Reader(sock)
        answers = [reader.response() for _ in requests]
        # A malformed request pipelined behind a good one: the good one is answered first.
        sock.sendall(
            f"GET /before-bad?tag={tag} HTTP/1.1\r\nHost: web\r\n\r\nGET /x HTTP/1.1\r\nHost: web\r\nHost: two\r\n\r\n".encode()
        )
        good, bad = reader.response(), reader.response()
        assert closed_within(sock, 3)
    # The same with a header block over the limit: its size is checked even when it came in the
    # read that carried the request before it.
    big = "".join(f"X-Big-{i}: {'v' * 8000}\r\n" for i in range(8))
    with socket.create_connection(("127.0.0.1", mesh.ports["web"]), timeout=10) as sock:
        sock.sendall(
            f"GET /before-big?tag={tag} HTTP/1.1\r\nHost: web\r\n\r\nGET /big?tag={tag} HTTP/1.1\r\nHost: web\r\n{big}\r\n".encode()
        )
        reader = Reader(sock)
        before_big, too_big = reader.response(), reader.response()
        assert closed_within(sock, 3)
    assert (before_big.status, too_big.status) == (200, 431)
    assert [a.status for a in answers] == [200, 200, 200, 204, 200, 200]
    assert answers[0].text == f"ok /slow?ms=300&tag={tag}&n=1\n"
    assert answers[1].json() == {"bytes": 5, "sha256": hashlib.sha256(b"hello").hexdigest()}
    assert answers[2].body == b"part 0\npart 1\n"
    assert answers[4].json() == {"bytes": 5, "sha256": hashlib.sha256(b"abcde").hexdigest()}
    assert answers[5].text == f"ok /last?tag={tag}\n"
    assert (good.status, good.text) == (200, f"ok /before-bad?tag={tag}\n")
    assert bad.status == 400
    assert "more than one Host header" in bad.text
    assert [r.path for r in mesh.web.find(lambda r: tag in r.target)] == [
        "/slow", "/upload", "/chunked", "/status", "/upload", "/last", "/before-bad", "/before-big"
    ]  # fmt: skip


def test_responses_of_every_framing_come_back_whole(mesh: Mesh) -> None:
    url = f"http://127.0.0.1:{mesh.ports['web']}"
    done = curl("-i", f"{url}/chunked?n=4")
    head, _, body = done.stdout.decode().partition("\r\n\r\n")
    assert "transfer-encoding: chunked" in head.lower()
    assert body == "".join(f"part {i}\n" for i in range(4))
    # Close-delimited from the workload: re-framed chunked for an HTTP/1.1 client (keep-alive stays).
    with socket.create_connection(("127.0.0.1", mesh.ports["web"]), timeout=10) as sock:
        reader = Reader(sock)
        sock.sendall(b"GET /close HTTP/1.1\r\nHost: web\r\n\r\n")
        response = reader.response()
        assert response.status == 200
        assert response.body == b"close-delimited body\n"
        sock.sendall(b"GET /after-close HTTP/1.1\r\nHost: web\r\n\r\n")
        assert reader.response().text == "ok /after-close\n"
    # HEAD: the length is kept, no body follows.
    with socket.create_connection(("127.0.0.1", mesh.ports["web"]), timeout=10) as sock:
        reader = Reader(sock)
        sock.sendall(b"HEAD /h HTTP/1.1\r\nHost: web\r\n\r\nGET /g HTTP/1.1\r\nHost: web\r\n\r\n")
        head_response = reader.response(head_request=True)
        assert head_response.status == 200
        assert head_response.header("content-length") == "6"
        assert reader.response().text == "ok /g\n"
    # HTTP/1.0 client: a close-delimited body and the connection closed after it.
    with socket.create_connection(("127.0.0.1", mesh.ports["web"]), timeout=10) as sock:
        sock.sendall(b"GET /chunked?n=2 HTTP/1.0\r\nHost: web\r\n\r\n")
        response = Reader(sock).response()
        assert response.body == b"part 0\npart 1\n"
        assert closed_within(sock, 3)


# -- bodies, Expect, upgrades --------------------------------------------------------------------


class RssSampler:
    """The peak VmRSS of some processes, sampled every 20 ms in a thread."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.start = {name: rss_kib(pid) for name, pid in pids.items()}
        self.peak = dict(self.start)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            for name, pid in self.pids.items():
                self.peak[name] = max(self.peak[name], rss_kib(pid))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def growth_mib(self) -> dict[str, float]:
        return {name: (self.peak[name] - self.start[name]) / 1024 for name in self.pids}


def pids(mesh: Mesh, *names: str) -> dict[str, int]:
    found = {}
    for name in names:
        proc = mesh.proxies[name].proc
        assert proc is not None
        found[name] = proc.pid
    return found


UPLOAD_MIB = 200


def test_a_large_chunked_upload_streams_whole_with_bounded_memory(mesh: Mesh) -> None:
    block = os.urandom(1 << 20)
    digest = hashlib.sha256()
    url = f"http://127.0.0.1:{mesh.ports['web']}/upload"
    with RssSampler(pids(mesh, "a-1", "web-1")) as rss:
        started = time.monotonic()
        # curl -T - sends stdin chunked (no length known in advance)
        proc = subprocess.Popen(["curl", "-sS", "--max-time", "120", "-T", "-", url],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        assert proc.stdin is not None
        try:
            for i in range(UPLOAD_MIB):
                piece = i.to_bytes(4, "big") + block[4:]  # no two MiB alike
                digest.update(piece)
                proc.stdin.write(piece)
            out, err = proc.communicate(timeout=120)  # closes stdin: the last chunk
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        took = time.monotonic() - started
    assert proc.returncode == 0, err
    assert json.loads(out) == {"bytes": UPLOAD_MIB << 20, "sha256": digest.hexdigest()}
    (received,) = mesh.web.find(lambda r: r.body_sha256 == digest.hexdigest())
    assert received.header("transfer-encoding") == "chunked"
    growth = rss.growth_mib()
    print(f"{UPLOAD_MIB} MiB chunked upload in {took:.1f} s ({UPLOAD_MIB / took:.0f} MiB/s); peak RSS growth "
          + ", ".join(f"{n} {g:.1f} MiB (from {rss.start[n] / 1024:.1f})" for n, g in growth.items()))  # fmt: skip
    assert all(g < 64 for g in growth.values()), growth


DOWNLOAD_MIB = 100


def test_a_large_download_to_a_slow_reader_holds_bounded_memory(mesh: Mesh) -> None:
    with (
        RssSampler(pids(mesh, "a-1", "web-1")) as rss,
        socket.create_connection(("127.0.0.1", mesh.ports["web"]), timeout=30) as sock,
    ):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(f"GET /download?mib={DOWNLOAD_MIB} HTTP/1.1\r\nHost: web\r\n\r\n".encode())
        reader = Reader(sock, timeout=30)
        response = reader.response(head_request=True)  # the head only: the body is read below
        assert response.status == 200
        assert response.header("content-length") == str(DOWNLOAD_MIB << 20)
        # Not reading for a second (the stall is the point): both proxies must stop reading from
        # their upstream rather than buffer the body.
        time.sleep(1.0)
        held = {name: (rss.peak[name] - rss.start[name]) / 1024 for name in rss.pids}
        digest = hashlib.sha256(bytes(reader.buffer))
        received = len(reader.buffer)
        reader.buffer.clear()
        started = time.monotonic()
        while received < DOWNLOAD_MIB << 20:
            data = sock.recv(1 << 20)
            assert data, f"closed after {received} bytes"
            digest.update(data)
            received += len(data)
        took = time.monotonic() - started
    assert received == DOWNLOAD_MIB << 20
    assert digest.hexdigest() == response.header("x-body-sha256")
    growth = rss.growth_mib()
    print(f"{DOWNLOAD_MIB} MiB download read in {took:.1f} s after a 1 s stall; RSS growth during the stall "
          + ", ".join(f"{n} {g:.1f} MiB" for n, g in held.items()) + "; peak "
          + ", ".join(f"{n} {g:.1f} MiB" for n, g in growth.items()))  # fmt: skip
    assert all(g < 64 for g in growth.values()), growth


def test_expect_100_continue_with_curl(mesh: Mesh, tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    body = tmp_path / "body"
    body.write_bytes(data)
    url = f"http://127.0.0.1:{mesh.ports['web']}/upload?expect=1"
    # A long expect timeout: curl sends the body only once the 100 came through both proxies.
    done = curl(
        "-v", "--expect100-timeout", "30", "-H", "Expect: 100-continue", "--data-binary", f"@{body}", url
    )
    assert done.returncode == 0, done.stderr
    verbose = done.stderr.decode()
    assert "< HTTP/1.1 100 Continue" in verbose, verbose
    assert json.loads(done.stdout) == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (received,) = mesh.web.find(lambda r: r.target == "/upload?expect=1")
    assert received.header("expect") == "100-continue"
    assert received.continued


def test_a_websocket_upgrade_goes_through_both_proxies(mesh: Mesh) -> None:
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    with socket.create_connection(("127.0.0.1", mesh.ports["mesh"]), timeout=10) as sock:
        sock.sendall(
            f"GET /ws HTTP/1.1\r\nHost: web.mesh\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
            + frame(0x1, b"sent with the handshake", mask=True)
        )
        reader = Reader(sock)
        response = reader.response()
        assert response.status == 101, response
        assert response.header("upgrade") == "websocket"
        assert response.header("connection").lower() == "upgrade"  # type: ignore[union-attr]
        assert response.header("sec-websocket-accept") == ws_accept(key)
        assert read_frame(reader.exact) == (0x1, b"sent with the handshake")
        big = os.urandom(70_000)  # a 64-bit length
        for opcode, payload in ((0x1, "héllo".encode()), (0x2, big), (0x9, b"ping"), (0x2, b"")):
            sock.sendall(frame(opcode, payload, mask=True))
            assert read_frame(reader.exact) == (0xA if opcode == 0x9 else opcode, payload)
        sock.sendall(frame(0x8, b"\x03\xe8", mask=True))
        assert read_frame(reader.exact) == (0x8, b"\x03\xe8")
        assert closed_within(sock, 5)
    (received,) = mesh.web.find(lambda r: r.path == "/ws")
    assert received.header("upgrade") == "websocket"
    assert received.header("connection") == "upgrade"


# -- timeouts and many connections -----------------------------------------------------------------


def test_a_slow_client_is_cut_off_by_the_header_timeout_while_others_are_served(mesh: Mesh) -> None:
    before = mesh.web.snapshot()
    served = 0
    with socket.create_connection(("127.0.0.1", mesh.ports["web"]), timeout=10) as slow:
        started = time.monotonic()
        slow.sendall(b"GET /slowloris HTTP/1.1\r\nHost: web\r\n")
        slow.setblocking(False)
        answer = b""
        # A byte of header every 100 ms (each resets nothing): meanwhile others are served.
        while time.monotonic() - started < HEADER_TIMEOUT + 3:
            try:
                slow.send(b"X")
            except (BrokenPipeError, ConnectionResetError):
                break
            assert get(mesh.ports["web"], f"/meanwhile-{served}").status == 200
            served += 1
            try:
                chunk = slow.recv(4096)
            except BlockingIOError:
                time.sleep(0.1)
                continue
            except ConnectionResetError:
                break
            if not chunk:
                break
            answer += chunk
        cut = time.monotonic() - started
        if not answer:  # the answer may arrive after a send failed
            slow.setblocking(True)
            slow.settimeout(2)
            try:
                answer = slow.recv(4096)
            except (OSError, TimeoutError):
                answer = b""
    print(
        f"slow client cut after {cut:.2f} s (header timeout {HEADER_TIMEOUT} s), {served} requests served meanwhile"
    )
    assert answer.startswith(b"HTTP/1.1 408 ") or answer == b"", answer
    assert HEADER_TIMEOUT <= cut < HEADER_TIMEOUT + 3
    assert served >= 3
    assert all(r.path.startswith("/meanwhile-") for r in mesh.web.since(before))


IDLE_CONNECTIONS = 1000


def test_a_thousand_idle_keep_alive_connections(mesh: Mesh) -> None:
    port = mesh.ports["web"]
    pid = pids(mesh, "a-1")["a-1"]
    get(port, "/warm-up")
    rss_before = rss_kib(pid)
    conns: list[socket.socket] = []
    readers: list[Reader] = []

    def round_trip(tag: str) -> list[int]:
        statuses = []
        for start in range(0, IDLE_CONNECTIONS, 50):  # 50 at a time: the upstream pool stays small
            batch = range(start, min(start + 50, IDLE_CONNECTIONS))
            for i in batch:
                if i == len(conns):  # a new connection asks at once (a silent one is closed at 1 s)
                    conns.append(socket.create_connection(("127.0.0.1", port), timeout=20))
                    readers.append(Reader(conns[i], timeout=20))
                conns[i].sendall(f"GET /{tag}/{i} HTTP/1.1\r\nHost: web\r\n\r\n".encode())
            statuses += [readers[i].response().status for i in batch]
        return statuses

    try:
        assert round_trip("first") == [200] * IDLE_CONNECTIONS
        idle = wait_for(
            lambda: (n := mesh.a1.metric(f'meshgate_proxy_listener_active{{listener="outbound/web:{port}"}}'))
            >= IDLE_CONNECTIONS and n,
            10, "the connections open at a-1",
        )  # fmt: skip
        rss_after = rss_kib(pid)
        # All still work (none was closed while idle).
        assert round_trip("second") == [200] * IDLE_CONNECTIONS
    finally:
        for sock in conns:
            sock.close()
    per_connection = (rss_after - rss_before) / IDLE_CONNECTIONS
    print(f"a-1 RSS {rss_before / 1024:.1f} MiB -> {rss_after / 1024:.1f} MiB with {idle:.0f} idle keep-alive "
          f"connections: {per_connection:.1f} KiB per connection")  # fmt: skip


def test_wrk_through_the_outbound(mesh: Mesh) -> None:
    proxies = pids(mesh, "a-1", "web-1")
    cpu = {name: cpu_seconds(pid) for name, pid in proxies.items()}
    done = subprocess.run(
        ["wrk", "-t2", "-c16", "-d3s", "--latency", f"http://127.0.0.1:{mesh.ports['web']}/wrk"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    print(done.stdout)
    assert "Socket errors" not in done.stdout
    assert "Non-2xx" not in done.stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", done.stdout).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", done.stdout).group(1))  # type: ignore[union-attr]
    used = {name: cpu_seconds(pid) - cpu[name] for name, pid in proxies.items()}
    print(f"wrk: {rate:.0f} req/s through a-1 and web-1; CPU per request "
          + ", ".join(f"{name} {seconds / total * 1e6:.0f} us ({seconds:.2f} s)" for name, seconds in used.items()))  # fmt: skip
    assert total > 0


# -- upstream errors ---------------------------------------------------------------------------------


def error_request_id(response: Response) -> str:
    match = re.search(r"request id: (\S+)", response.text)
    assert match, response.text
    assert response.header("x-request-id") == match.group(1)
    return match.group(1)


def test_no_healthy_endpoint_is_503(mesh: Mesh) -> None:
    response = get(mesh.ports["ghost"], "/anything", host="ghost")
    assert response.status == 503
    assert "no healthy endpoint for 'ghost'" in response.text
    error_request_id(response)


def test_a_workload_that_is_down_or_resets_is_502(mesh: Mesh) -> None:
    assert get(mesh.ports["down"], "/before", host="down").status == 200
    mesh.workloads["down"].stop()  # down-1 still counts it healthy (health checked once a minute)
    response = get(mesh.ports["down"], "/after", host="down")
    assert response.status == 502, response
    assert "upstream connect failed" in response.text, response.text
    error_request_id(response)
    # A workload that resets the connection instead of answering.
    response = get(mesh.ports["web"], "/reset")
    assert response.status == 502, response
    assert "upstream closed the connection before answering" in response.text
    error_request_id(response)


def test_a_workload_slower_than_the_upstream_timeout_is_504(mesh: Mesh) -> None:
    started = time.monotonic()
    response = get(mesh.ports["web"], f"/slow?ms={int(UPSTREAM_TIMEOUT * 1000) + 1500}")
    took = time.monotonic() - started
    assert response.status == 504, response
    assert f"no response from upstream within {UPSTREAM_TIMEOUT:g} s" in response.text
    request_id = error_request_id(response)
    assert UPSTREAM_TIMEOUT <= took < UPSTREAM_TIMEOUT + 2
    # The id web-1 named is the one a-1 gave the request.
    (received,) = mesh.web.find(lambda r: r.path == "/slow" and r.header("x-request-id") == request_id)
    assert received


# -- metrics and access log ------------------------------------------------------------------------


def test_metrics_count_requests_by_class_and_the_refusals(mesh: Mesh) -> None:
    a1 = mesh.a1.metrics()
    web1 = mesh.proxies["web-1"].metrics()

    def value(samples: dict[str, float], name: str, **labels: str) -> float:
        inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
        return samples.get(f"{name}{{{inner}}}", 0.0)

    requests = "meshgate_http_requests_total"
    out = {"direction": "outbound", "service": "web"}
    assert value(a1, requests, **out, method="GET", code="2xx", zone="one") > IDLE_CONNECTIONS
    assert value(a1, requests, **out, method="POST", code="2xx", zone="one") >= 3
    assert value(a1, requests, **out, method="GET", code="5xx", zone="one") >= 1  # the 504
    assert (
        value(a1, requests, direction="outbound", service="ghost", method="GET", code="5xx", zone="one") >= 1
    )
    assert (
        value(a1, requests, direction="outbound", service="down", method="GET", code="5xx", zone="one") >= 1
    )
    assert value(web1, requests, direction="inbound", service="web", method="GET", code="2xx", zone="one") > 0
    refused = "meshgate_http_requests_refused_total"
    expected: dict[int, int] = {}
    for _, status in REFUSED.values():
        expected[status] = expected.get(status, 0) + 1
    expected[400] += 1  # the bad requests pipelined behind a good one
    expected[431] += 1
    for status, count in expected.items():
        assert value(a1, refused, **out, status=str(status)) >= count, (status, count)
    assert value(a1, refused, direction="outbound", service="-", status="404") >= 3
    errors = "meshgate_http_upstream_errors_total"
    assert value(a1, errors, direction="outbound", service="ghost", kind="no_endpoint") >= 1
    assert value(web1, errors, direction="inbound", service="web", kind="timeout") >= 1
    down = mesh.proxies["down-1"].metrics()
    assert value(down, errors, direction="inbound", service="down", kind="connect") >= 1
    assert value(a1, "meshgate_http_requests_in_flight", **out) == 0
    finished = value(a1, "meshgate_http_request_duration_seconds_count", **out)
    assert value(a1, "meshgate_http_request_duration_seconds_bucket", **out, le="+Inf") == finished > 0


def access_log(path: Path) -> list[dict[str, Any]]:
    text = path.read_text()
    complete = text[: text.rfind("\n") + 1]  # a line being written is read next time
    return [json.loads(line) for line in complete.splitlines() if line]


def test_the_access_log_has_json_lines_with_the_request_ids(mesh: Mesh) -> None:
    request_id = f"log-{uuid.uuid4().hex}"
    done = curl("-H", f"X-Request-Id: {request_id}", f"http://127.0.0.1:{mesh.ports['web']}/logged")
    assert done.returncode == 0, done.stderr
    refused = request(mesh.ports["web"], b"GET /x HTTP/1.1\r\nHost: web\r\nHost: two\r\n\r\n")
    refused_id = error_request_id(refused)

    def entries(path: Path, wanted: str) -> list[dict[str, Any]]:
        return [e for e in access_log(path) if e.get("id") == wanted]

    (a_entry,) = wait_for(lambda: entries(mesh.root / "a-access.log", request_id), 5, "a-1 logged it")
    (web_entry,) = wait_for(lambda: entries(mesh.root / "web-access.log", request_id), 5, "web-1 logged it")
    assert a_entry["listener"] == f"outbound/web:{mesh.ports['web']}"
    assert [a_entry[k] for k in ("service", "method", "path", "status")] == ["web", "GET", "/logged", 200]
    assert a_entry["client"] == "127.0.0.1"
    assert a_entry["zone"] == "one"
    assert web_entry["listener"] == "inbound"
    assert web_entry["identity"].endswith("/svc/a")
    assert web_entry["upstream"].endswith(f":{mesh.web.port}")
    (refusal,) = wait_for(lambda: entries(mesh.root / "a-access.log", refused_id), 5, "the refusal logged")
    assert refusal["status"] == 400
    assert refusal["error"] == "more than one Host header"
    everything = access_log(mesh.root / "a-access.log")
    assert all("id" in e and "ts" in e for e in everything)
    print(f"a-1 access log: {len(everything)} lines")
