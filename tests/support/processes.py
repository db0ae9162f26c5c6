"""Real meshgate processes for integration tests: started, awaited, stopped by PID."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

MESHGATE = [sys.executable, "-m", "meshgate"]


def http_json(request: urllib.request.Request, timeout: float = 30) -> tuple[int, Any]:
    """Status and JSON body of a request; error statuses are answers too (and closed)."""
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read() or b"null")


def wait_for(condition, timeout: float, what: str, interval: float = 0.05):  # type: ignore[no-untyped-def]
    """Poll ``condition`` until it returns something truthy, or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except Exception as exc:
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_error})")


class ManagedProcess:
    """A meshgate process in its own process group, writing its URL to a file once listening;
    stopped by PID (SIGTERM, then SIGKILL of the group)."""

    what = "process"

    def __init__(self, data_dir: Path, log_name: str) -> None:
        self.data_dir = data_dir
        self.address_file = data_dir / "address"
        self.log = data_dir / log_name
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def launch(self, args: Sequence[str], timeout: float) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.address_file.unlink(missing_ok=True)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=log, start_new_session=True)
        self.url = wait_for(self._address, timeout, f"{self.what} address ({self.log})")
        return self.url

    def _address(self) -> str | None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.what} exited with {self.proc.returncode}: {self.tail()}")
        return self.address_file.read_text().strip() if self.address_file.exists() else None

    def stop(self, timeout: float = 10) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.what} ignored SIGTERM for {timeout}s") from None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def wait_exit(self, timeout: float = 30) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def tail(self, lines: int = 30) -> str:
        if not self.log.exists():
            return "(no log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class GlobalCPProcess(ManagedProcess):
    """``meshgate global-cp run`` on free ports (the same ports again on restart)."""

    what = "global CP"

    def __init__(
        self,
        data_dir: Path,
        *,
        store: str | None = None,
        extra: Sequence[str] = (),
        command: Sequence[str] = MESHGATE,
    ) -> None:
        super().__init__(data_dir, "global-cp.log")
        self.command = list(command)
        self.store = store
        self.extra = list(extra)
        self.zone_address_file = data_dir / "zone-address"
        self.zone_url = ""
        self.zone_port = 0
        self.port = 0

    def start(self, timeout: float = 30) -> GlobalCPProcess:
        self.zone_address_file.unlink(missing_ok=True)
        # Port 0 on first start; the same ports on restart, so zone CPs find it again.
        args = [
            *self.command, "global-cp", "run", "--data-dir", str(self.data_dir),
            "--listen", f"127.0.0.1:{self.port}", "--address-file", str(self.address_file),
            "--zone-listen", f"127.0.0.1:{self.zone_port}", "--zone-address-file", str(self.zone_address_file),
            *self.extra,
        ]  # fmt: skip
        if self.store:
            args += ["--store", self.store]
        self.port = int(self.launch(args, timeout).rsplit(":", 1)[1])
        wait_for(self.ready, timeout, f"global CP ready ({self.tail()})")
        self.zone_url = wait_for(self._zone_address, timeout, "zone-facing address")
        self.zone_port = int(self.zone_url.rsplit(":", 1)[1])
        return self

    def _zone_address(self) -> str | None:
        f = self.zone_address_file
        return f.read_text().strip() if f.exists() else None

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/readyz", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    @property
    def token_file(self) -> Path:
        return self.data_dir / "admin-token"

    def token(self) -> str:
        return self.token_file.read_text().strip()

    def cli_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MESHGATE_")}
        env.update(MESHGATE_SERVER=self.url, MESHGATE_TOKEN_FILE=str(self.token_file))
        return env


def cli(
    args: Sequence[str], env: dict[str, str], stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MESHGATE, *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def cli_json(args: Sequence[str], env: dict[str, str]) -> object:
    done = cli([*args, "-o", "json"], env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


class ZoneCPProcess(ManagedProcess):
    """``meshgate zone-cp run`` on a free port."""

    what = "zone CP"

    def __init__(
        self,
        data_dir: Path,
        zone: str,
        global_url: str,
        token: str | None = None,
        proxy_host: str = "127.0.0.1",
    ) -> None:
        super().__init__(data_dir, "zone-cp.log")
        self.proxy_host = proxy_host  # 0.0.0.0: proxies and edges in other network namespaces reach it
        self.proxy_address_file = data_dir / "proxy-address"
        self.proxy_url = ""
        self.proxy_port = 0  # free on first start, the same again on restart (proxies reconnect)
        self.zone = zone
        self.global_url = global_url
        self.token = token

    def start(self, timeout: float = 30, *, wait_joined: bool = True) -> ZoneCPProcess:
        args = [*MESHGATE, "zone-cp", "run", "--zone", self.zone, "--global", self.global_url,
                "--data-dir", str(self.data_dir), "--listen", "127.0.0.1:0",
                "--address-file", str(self.address_file),
                "--proxy-listen", f"{self.proxy_host}:{self.proxy_port}",
                "--proxy-address-file", str(self.proxy_address_file)]  # fmt: skip
        if self.token is not None:
            token_file = self.data_dir / "token"
            self.data_dir.mkdir(parents=True, exist_ok=True)
            token_file.write_text(self.token)
            args += ["--token-file", str(token_file)]
        self.proxy_address_file.unlink(missing_ok=True)
        self.launch(args, timeout)
        if wait_joined:
            wait_for(self.ready, timeout, f"zone CP {self.zone} joined ({self.tail()})")
            self.proxy_url = wait_for(
                lambda: self.proxy_address_file.exists() and self.proxy_address_file.read_text().strip(),
                timeout, "the proxy-facing address",
            )  # fmt: skip
            self.proxy_port = int(self.proxy_url.rsplit(":", 1)[1])
        return self

    def ready(self) -> bool:
        try:
            return bool(self.get("/readyz"))
        except OSError:
            return False

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=5) as response:
            return json.loads(response.read())

    def get_or_none(self, path: str) -> Any:
        status, body = http_json(urllib.request.Request(self.url + path), timeout=5)
        return body if status == 200 else None

    def names(self, plural: str) -> set[str]:
        return {item["metadata"]["name"] for item in self.get(f"/api/v1/{plural}")["items"]}

    def sync(self) -> dict[str, Any]:
        result: dict[str, Any] = self.get("/api/v1/sync")
        return result


class Admin:
    """The operator, talking to a global CP's API."""

    def __init__(self, cp: GlobalCPProcess) -> None:
        self.cp = cp

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.cp.url + path, data=data, method=method,
            headers={"Authorization": f"Bearer {self.cp.token()}", "Content-Type": "application/json"},
        )  # fmt: skip
        return http_json(request)

    def apply(self, *docs: dict[str, Any]) -> Any:
        status, body = self.call("POST", "/api/v1/apply", {"kind": "List", "items": list(docs)})
        assert status == 200, body
        return body

    def delete(self, plural: str, name: str) -> None:
        status, body = self.call("DELETE", f"/api/v1/{plural}/{name}")
        assert status == 200, body

    def names(self, plural: str) -> set[str]:
        status, body = self.call("GET", f"/api/v1/{plural}")
        assert status == 200, body
        return {item["metadata"]["name"] for item in body["items"]}

    def token(self, role: str, zone: str, *, reusable: bool = False, ttl: str = "1h") -> str:
        status, body = self.call(
            "POST", "/api/v1/tokens", {"role": role, "zone": zone, "ttl": ttl, "reusable": reusable}
        )
        assert status == 201, body
        return str(body["token"])

    def metric(self, name: str, **labels: str) -> float:
        """The value of one Prometheus sample (0 when absent)."""
        with urllib.request.urlopen(self.cp.url + "/metrics", timeout=5) as response:
            text = response.read().decode()
        wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            sample, _, value = line.rpartition(" ")
            metric, _, rest = sample.partition("{")
            if metric == name and ",".join(sorted(rest.rstrip("}").split(","))) == wanted:
                return float(value)
        return 0.0
