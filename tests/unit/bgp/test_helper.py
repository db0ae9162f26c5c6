"""The API helper relays both ways, line by line as written, and exits at once when either side
closes (ExaBGP exiting, or the controller's socket end closing)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import bgp.helper

HELPER = Path(bgp.helper.__file__)


class Relay:
    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / "api.sock"
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(self.path))
        self.listener.listen(1)
        self.listener.settimeout(10)
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-S", str(HELPER), str(self.path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.conn, _ = self.listener.accept()
        self.conn.settimeout(10)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        self.conn.close()
        self.listener.close()


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[Relay]:
    r = Relay(tmp_path)
    try:
        yield r
    finally:
        r.close()


def read_line(conn: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(4096)
        assert chunk, "closed"
        data += chunk
    return data


def test_relays_both_ways(relay: Relay) -> None:
    assert relay.proc.stdin is not None
    assert relay.proc.stdout is not None
    relay.proc.stdin.write(b'{ "type": "state" }\ndone\n')
    relay.proc.stdin.flush()
    received = read_line(relay.conn)
    while received.count(b"\n") < 2:
        received += read_line(relay.conn)
    assert received == b'{ "type": "state" }\ndone\n'
    relay.conn.sendall(b"announce route 203.0.113.10/32 next-hop self\n")
    assert relay.proc.stdout.readline() == b"announce route 203.0.113.10/32 next-hop self\n"


def test_exits_when_the_controller_goes(relay: Relay) -> None:
    start = time.monotonic()
    relay.conn.close()
    assert relay.proc.wait(5) == 0
    assert time.monotonic() - start < 1.0


def test_exits_when_exabgp_goes(relay: Relay) -> None:
    assert relay.proc.stdin is not None
    relay.proc.stdin.close()
    assert relay.proc.wait(5) == 0
    assert relay.conn.recv(10) == b""


def test_no_controller_is_an_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-I", "-S", str(HELPER), str(tmp_path / "nobody.sock")],
        capture_output=True,
        timeout=10,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 1
    assert b"cannot connect" in done.stderr


def test_runs_as_a_module_too(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bgp.helper"],
        capture_output=True,
        timeout=10,
        check=False,
        cwd=Path(bgp.helper.__file__).parents[1],
    )
    assert done.returncode == 2
    assert b"usage: python -m bgp.helper SOCKET_PATH" in done.stderr
