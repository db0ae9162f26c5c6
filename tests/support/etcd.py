"""Real etcd processes for tests: one server, or a cluster of N members on loopback.

Ports come from binding port 0; each member gets its own name, data dir and log file under
the given directory. Readiness is polled (``/health`` on the client URL) against a
deadline, never slept for. Processes are stopped by their recorded PID.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

APT_PACKAGE = "etcd-server"
START_DEADLINE = 20.0
STOP_DEADLINE = 10.0


def etcd_binary() -> str:
    """The ``etcd`` binary, or skip (fail when ``CI=true``: CI installs it)."""
    found = shutil.which("etcd")
    if found:
        return found
    message = f"the etcd server binary is not installed (apt-get install {APT_PACKAGE})"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def free_ports(count: int) -> list[int]:
    """Ports the kernel reports free now (all held open together so they differ)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass(frozen=True)
class EtcdTls:
    """PEM files: etcd serves its clients over TLS and requires client certificates."""

    ca: Path
    server_cert: Path  # needs both serverAuth and clientAuth with --client-cert-auth
    server_key: Path
    client_cert: Path
    client_key: Path

    def server_flags(self) -> list[str]:
        return [
            *("--cert-file", str(self.server_cert), "--key-file", str(self.server_key)),
            *("--trusted-ca-file", str(self.ca), "--client-cert-auth"),
        ]

    def client_flags(self) -> list[str]:
        return ["--cacert", str(self.ca), "--cert", str(self.client_cert), "--key", str(self.client_key)]

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        context.load_cert_chain(str(self.client_cert), str(self.client_key))
        return context


class EtcdServer:
    """One etcd member. Alone, or one of an ``EtcdCluster`` (``peers`` set by the cluster)."""

    def __init__(self, directory: Path, *, name: str | None = None, tls: EtcdTls | None = None) -> None:
        self.tls = tls
        self.name = name or f"etcd-{uuid.uuid4().hex[:8]}"
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.data_dir = directory / f"{self.name}.data"
        self.log_path = directory / f"{self.name}.log"
        self.client_port, self.peer_port = free_ports(2)
        self.cluster_token = f"tok-{uuid.uuid4().hex[:12]}"
        self.peers: dict[str, str] = {}  # name -> peer URL; empty for a single server
        self.process: subprocess.Popen[bytes] | None = None

    # -- addresses --------------------------------------------------------------------

    @property
    def endpoints(self) -> list[str]:
        return [f"127.0.0.1:{self.client_port}"]

    @property
    def client_url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def _command(self) -> list[str]:
        initial = self.peers or {self.name: self.peer_url}
        flags = {
            "--name": self.name,
            "--data-dir": str(self.data_dir),
            "--listen-client-urls": self.client_url,
            "--advertise-client-urls": self.client_url,
            "--listen-peer-urls": self.peer_url,
            "--initial-advertise-peer-urls": self.peer_url,
            "--initial-cluster": ",".join(f"{n}={u}" for n, u in initial.items()),
            "--initial-cluster-token": self.cluster_token,
            "--initial-cluster-state": "new",
            "--logger": "zap",
            "--log-outputs": "stderr",
        }
        tls = self.tls.server_flags() if self.tls else []
        return [etcd_binary(), *(part for pair in flags.items() for part in pair), *tls]

    def etcdctl(self, *args: str, timeout: float = 10) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [
                "etcdctl",
                "--endpoints",
                self.client_url,
                *(self.tls.client_flags() if self.tls else []),
                *args,
            ],
            capture_output=True,
            timeout=timeout,
            check=False,
            env={**os.environ, "ETCDCTL_API": "3"},
        )

    # -- lifecycle --------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def launch(self) -> None:
        """Start the process without waiting for it to serve (see ``wait_ready``)."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        with self.log_path.open("ab") as log:
            log.write(f"\n=== start {time.strftime('%H:%M:%S')} ===\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self._command(),
                stdout=subprocess.DEVNULL,
                stderr=log,
                stdin=subprocess.DEVNULL,
                process_group=0,
            )

    def wait_ready(self, deadline: float = START_DEADLINE) -> None:
        """Poll ``/health`` until it answers healthy; dump the log and raise on timeout."""
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            if self.process is not None and self.process.poll() is not None:
                self.dump_log()
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}")
            if self.healthy():
                return
            time.sleep(0.05)  # poll interval, not a wait for readiness
        self.dump_log()
        raise TimeoutError(f"{self.name} not healthy after {deadline:.0f} s")

    def healthy(self) -> bool:
        try:
            context = self.tls.client_context() if self.tls else None
            with urllib.request.urlopen(f"{self.client_url}/health", timeout=1.0, context=context) as reply:
                body = json.loads(reply.read())
        except (OSError, ValueError, urllib.error.URLError):
            return False
        return bool(body.get("health") == "true")

    def start(self, deadline: float = START_DEADLINE) -> EtcdServer:
        first = not self.data_dir.exists()
        for attempt in range(3):
            self.launch()
            try:
                self.wait_ready(deadline)
            except RuntimeError:
                # Another process took a port between free_ports() and etcd's bind: a lone,
                # never-started server can move; a restart or a cluster member cannot.
                if not (first and not self.peers and attempt < 2 and self._lost_a_port()):
                    raise
                self.client_port, self.peer_port = free_ports(2)
                shutil.rmtree(self.data_dir, ignore_errors=True)
                continue
            return self
        raise AssertionError("unreachable")

    def _lost_a_port(self) -> bool:
        return "address already in use" in self.log_path.read_text(errors="replace")

    def terminate(self) -> None:
        """Send SIGTERM without waiting (see ``stop``)."""
        if self.process is not None and self.process.poll() is None:
            self.resume()  # a paused process cannot act on SIGTERM
            self.process.send_signal(signal.SIGTERM)

    def stop(self, deadline: float = STOP_DEADLINE) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``deadline``."""
        if not self.running:
            return
        assert self.process is not None
        self.terminate()
        try:
            self.process.wait(deadline)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def pause(self) -> None:
        """SIGSTOP: the process keeps its sockets open but answers nothing."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)

    def restart(self, deadline: float = START_DEADLINE) -> None:
        """Stop and start again on the same ports and data dir."""
        self.stop()
        self.start(deadline)

    def compact(self, revision: int) -> None:
        """Drop the history before ``revision`` (``etcdctl compact``)."""
        self.etcdctl("compact", str(revision)).check_returncode()

    def dump_log(self, tail: int = 60) -> None:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return
        print(f"--- {self.name} log ({self.log_path}), last {tail} lines ---", file=sys.stderr)
        for line in lines[-tail:]:
            print(line, file=sys.stderr)

    def __enter__(self) -> EtcdServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EtcdCluster:
    """N members on loopback, started together."""

    def __init__(self, directory: Path, size: int = 3) -> None:
        run = uuid.uuid4().hex[:6]
        self.members = [EtcdServer(directory, name=f"m{i}-{run}") for i in range(size)]
        peers = {m.name: m.peer_url for m in self.members}
        token = f"cluster-{run}"
        for member in self.members:
            member.peers = peers
            member.cluster_token = token

    @property
    def endpoints(self) -> list[str]:
        return [e for m in self.members for e in m.endpoints]

    def start(self, deadline: float = START_DEADLINE) -> EtcdCluster:
        for member in self.members:
            member.launch()
        try:
            for member in self.members:
                member.wait_ready(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, deadline: float = 2.0) -> None:
        """SIGTERM to every member at once, SIGKILL what is left after ``deadline``.

        A leader stopping with SIGTERM hands over leadership first and waits up to 7 s for a
        peer that is itself shutting down; every commit is already fsynced, so the short
        deadline loses nothing.
        """
        for member in self.members:
            member.terminate()
        for member in self.members:
            member.stop(deadline)

    def kill(self, member: EtcdServer) -> None:
        member.kill()

    def restart(self, member: EtcdServer, deadline: float = START_DEADLINE) -> None:
        member.stop()
        member.start(deadline)

    def status(self, members: Sequence[EtcdServer] | None = None) -> list[dict[str, object]]:
        """``etcdctl endpoint status`` of the running members (raw JSON records)."""
        running = [m for m in (members or self.members) if m.running]
        if not running:
            return []
        out = subprocess.run(
            [
                "etcdctl",
                "endpoint",
                "status",
                "-w",
                "json",
                "--endpoints",
                ",".join(m.client_url for m in running),
                "--command-timeout",
                "3s",
            ],
            capture_output=True,
            timeout=10,
            check=False,
            env={**os.environ, "ETCDCTL_API": "3"},
        )
        if not out.stdout.strip():
            return []
        records: list[dict[str, object]] = json.loads(out.stdout)
        return records

    def leader(self, deadline: float = 15.0) -> EtcdServer:
        """The member that leads now, as the running members agree (polled until they do)."""
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            leader = self._agreed_leader()
            if leader is not None:
                return leader
            time.sleep(0.1)  # poll interval
        raise TimeoutError(f"no agreed leader among running members after {deadline:.0f} s")

    def _agreed_leader(self) -> EtcdServer | None:
        by_url = {m.client_url: m for m in self.members}
        leaders: set[int] = set()
        ids: dict[int, EtcdServer] = {}
        for record in self.status():
            status = record.get("Status")
            endpoint = record.get("Endpoint")
            if not isinstance(status, dict) or not isinstance(endpoint, str):
                continue
            leaders.add(int(status.get("leader", 0)))
            header = status.get("header", {})
            member = by_url.get(endpoint)
            if member is not None and isinstance(header, dict):
                ids[int(header.get("member_id", 0))] = member
        if len(leaders) != 1:
            return None
        (leader_id,) = leaders
        member = ids.get(leader_id)
        return member if member is not None and member.running else None

    def dump_logs(self) -> None:
        for member in self.members:
            member.dump_log()

    def __enter__(self) -> EtcdCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
