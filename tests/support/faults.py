"""A ``FaultProxy`` on its own event loop in a thread, for tests written with blocking sockets;
and a blocking echo server to put behind it."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from meshgate.faults import FaultProxy, Faults

T = TypeVar("T")


class ThreadedFaultProxy:
    """``FaultProxy(listen, target, faults, **kwargs)`` run in a thread: ``start()``, ``port``,
    ``set(faults)``, ``reset_existing()``, ``stats()``, ``stop()`` (also a context manager)."""

    def __init__(
        self, target: tuple[str, int], faults: Faults | None = None, listen: tuple[str, int] = ("127.0.0.1", 0),
        **kwargs: Any,
    ) -> None:  # fmt: skip
        self.proxy = FaultProxy(listen, target, faults, **kwargs)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self.port = 0

    def _call(self, make: Callable[[], Any], timeout: float = 10.0) -> Any:
        async def wrapper() -> Any:
            result = make()
            return await result if asyncio.iscoroutine(result) else result

        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result(timeout)

    def start(self) -> ThreadedFaultProxy:
        self._thread.start()
        self._call(self.proxy.start)
        self.port = self.proxy.port
        return self

    def set(self, faults: Faults) -> None:
        self._call(lambda: self.proxy.set(faults))

    def reset_existing(self) -> int:
        count: int = self._call(self.proxy.reset_existing)
        return count

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self._call(self.proxy.stats_json)
        return stats

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        try:
            self._call(self.proxy.stop)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    def __enter__(self) -> ThreadedFaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EchoServer:
    """Echoes every byte back (or, with ``source``, sends that many bytes then closes), one
    thread per connection, on 127.0.0.1 and a free port."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.address = ("127.0.0.1", self.port)
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, name="echo", daemon=True)

    def start(self) -> EchoServer:
        self._acceptor.start()
        return self

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                self._connections.add(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            first = conn.recv(65536)
            if first.startswith(b"SEND "):  # "SEND n\n": n bytes, then close
                size = int(first.split()[1])
                block = b"x" * 65536
                while size > 0:
                    conn.sendall(block[: min(size, len(block))])
                    size -= len(block)
            else:
                data = first
                while data:
                    conn.sendall(data)
                    data = conn.recv(65536)
        with self._lock:
            self._connections.discard(conn)
        conn.close()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        with self._lock:
            for conn in self._connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        self._acceptor.join(5)
        for thread in self._threads:
            thread.join(5)

    def __enter__(self) -> EchoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
