"""``python -m meshgate.faults`` as a process: its ready line, the admin endpoint (GET/PUT
/faults with 400 and field paths on bad input, POST /reset, GET /stats, 404/405), and a clean
exit on SIGTERM."""

from __future__ import annotations

import json
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.faults import EchoServer

pytestmark = pytest.mark.slow


def admin_call(
    port: int, method: str, path: str, body: Any = None, raw: bytes | None = None
) -> tuple[int, Any]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


class FaultsProcess:
    def __init__(self, target_port: int, *extra: str) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "meshgate.faults", "--listen", "127.0.0.1:0",
                "--target", f"127.0.0.1:{target_port}", "--admin", "127.0.0.1:0", *extra,
            ],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], 20)
        line = self.process.stdout.readline() if ready else b""
        if not line:
            self.stop()
            raise AssertionError(f"no ready line from python -m meshgate.faults: {self.stderr()}")
        announced = json.loads(line)
        self.port: int = announced["listening"]
        self.admin: int = announced["admin"]

    def stderr(self) -> str:
        assert self.process.stderr is not None
        return self.process.stderr.read().decode(errors="replace") if self.process.poll() is not None else ""

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()
        return self.process.returncode


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    with EchoServer() as server:
        yield server


def test_serves_and_answers_its_admin_endpoint(echo: EchoServer) -> None:
    proc = FaultsProcess(echo.port, "--delay", "0.03")
    try:
        assert admin_call(proc.admin, "GET", "/faults") == (200, {
            "delay": 0.03, "jitter": 0.0, "bandwidth": None, "reset_after": None, "stall": False, "refuse": False,
        })  # fmt: skip

        with socket.create_connection(("127.0.0.1", proc.port), timeout=5) as conn:
            started = time.monotonic()
            conn.sendall(b"ping")
            assert conn.recv(10) == b"ping"
            assert time.monotonic() - started >= 0.06

            status, body = admin_call(
                proc.admin, "PUT", "/faults", {"delay": -1, "bandwidth": "fast", "drop": 1}
            )
            assert status == 400
            assert body["error"] == "invalid faults"
            assert {v["path"] for v in body["violations"]} == {"delay", "bandwidth", "drop"}
            assert admin_call(proc.admin, "PUT", "/faults", raw=b"{not json")[0] == 400
            assert admin_call(proc.admin, "GET", "/faults")[1]["delay"] == 0.03  # unchanged

            assert admin_call(proc.admin, "PUT", "/faults", {"delay": 0}) == (200, {
                "delay": 0.0, "jitter": 0.0, "bandwidth": None, "reset_after": None, "stall": False, "refuse": False,
            })  # fmt: skip
            conn.sendall(b"pong")
            assert conn.recv(10) == b"pong"

            stats = admin_call(proc.admin, "GET", "/stats")[1]
            assert stats["accepted"] == 1
            assert stats["open"] == 1
            assert stats["bytes_to_target"] == stats["bytes_to_client"] == 8

            assert admin_call(proc.admin, "POST", "/reset") == (200, {"reset": 1})
            with pytest.raises(ConnectionResetError):
                conn.recv(10)
        assert admin_call(proc.admin, "GET", "/stats")[1]["resets"] == 1

        assert admin_call(proc.admin, "GET", "/nothing")[0] == 404
        assert admin_call(proc.admin, "DELETE", "/faults")[0] == 405
    finally:
        assert proc.stop() == 0


def test_refuses_invalid_faults_on_the_command_line(echo: EchoServer) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "meshgate.faults", "--listen", "127.0.0.1:0", "--target", f"127.0.0.1:{echo.port}",
         "--admin", "127.0.0.1:0", "--delay", "-2"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "delay: must be a number" in done.stderr
