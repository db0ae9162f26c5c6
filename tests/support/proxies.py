"""Real ``meshgate proxy run`` processes for data-plane tests, and what they expose."""

from __future__ import annotations

import json
import random
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.processes import MESHGATE, ManagedProcess, wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def listen_port(*hosts: str) -> int:
    """A free port below the ephemeral range on every one of ``hosts`` (default 127.0.0.1): the
    kernel never hands it to an outgoing connection (the proxies', the clients') between now and
    the process binding it."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as ports:
        low = int(ports.read().split()[0])
    rng = random.Random()
    while True:
        port = rng.randrange(max(low - 12000, 1024), low)
        if all(_bindable(host, port) for host in hosts or ("127.0.0.1",)):
            return port


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
        return True


def parse_metrics(text: str) -> dict[str, float]:
    """Every sample of a Prometheus exposition, keyed ``name{labels}`` as printed."""
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            samples[key] = float(value)
    return samples


class ProxyProcess(ManagedProcess):
    """A local proxy or an ingress, configured from a dict, with an admin port of its own."""

    what = "proxy"

    def __init__(
        self, data_dir: Path, role: str, zone_cp_url: str, config: dict[str, Any], *,
        token: str | None = None, cert_ttl: float | None = None, workers: int = 1,
        drain_timeout: float = 5.0,
    ) -> None:  # fmt: skip
        super().__init__(data_dir, "proxy.log")
        self.role, self.zone_cp_url = role, zone_cp_url
        self.admin_port = free_port()
        self.config = {**config, "admin": f"127.0.0.1:{self.admin_port}"}
        self.token, self.cert_ttl, self.workers = token, cert_ttl, workers
        self.drain_timeout = drain_timeout

    @property
    def name(self) -> str:
        return str(self.config["name"])

    def start(self, timeout: float = 30, *, wait_ready: bool = True) -> ProxyProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config_file = self.data_dir / "proxy.json"
        config_file.write_text(json.dumps(self.config))
        args = [*MESHGATE, "proxy", "run", "--role", self.role, "--zone-cp", self.zone_cp_url,
                "--data-dir", str(self.data_dir), "--config", str(config_file),
                "--workers", str(self.workers), "--drain-timeout", str(self.drain_timeout),
                "--log-level", "debug"]  # fmt: skip
        if self.token is not None:
            token_file = self.data_dir / "token"
            token_file.write_text(self.token)
            args += ["--token-file", str(token_file)]
        if self.cert_ttl is not None:
            args += ["--cert-ttl", str(self.cert_ttl)]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=log, start_new_session=True)
        if wait_ready:
            wait_for(self.ready, timeout, f"proxy {self.name} ready ({self.log})")
        return self

    def ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"proxy {self.name} exited with {self.proc.returncode}: {self.tail()}")
        return self.admin("/readyz")[0] == 200

    def admin(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def metrics(self) -> dict[str, float]:
        """Every sample, keyed ``name{labels}`` as printed."""
        status, text = self.admin("/metrics")
        assert status == 200, text
        return parse_metrics(text)

    def metric(self, key: str) -> float:
        return self.metrics().get(key, 0.0)
