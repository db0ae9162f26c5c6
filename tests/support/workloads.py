"""Workloads for data-plane tests: TCP servers that answer with their name and record what
they received, started and stopped from the test (a thread each)."""

from __future__ import annotations

import socket
import socketserver
import threading
from typing import Any


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: Workload = self.server  # type: ignore[assignment]
        conn: socket.socket = self.request
        received = bytearray()
        while True:
            data = conn.recv(65536)
            if not data:
                break
            received += data
            if server.mode == "echo":
                conn.sendall(data)
            elif b"\n" in received:  # "greet": one line in, "<name> <line>" out, then close
                line = bytes(received).split(b"\n", 1)[0]
                conn.sendall(server.name.encode() + b" " + line + b"\n")
                break
        with server.lock:
            server.received.append(bytes(received))


class Workload(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, name: str, *, mode: str = "greet", port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.name, self.mode = name, mode
        self.received: list[bytes] = []
        self.lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        port: int = self.server_address[1]
        return port

    def start(self) -> Workload:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(5)

    def __enter__(self) -> Workload:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def greet(port: int, line: str, host: str = "127.0.0.1", timeout: float = 10.0) -> str:
    """Send one line through ``host:port``; return the answer (raises if the connection fails)."""
    with socket.create_connection((host, port), timeout=timeout) as conn:
        conn.sendall(line.encode() + b"\n")
        answer = b""
        while not answer.endswith(b"\n"):
            data = conn.recv(4096)
            if not data:
                break
            answer += data
    return answer.decode().strip()
