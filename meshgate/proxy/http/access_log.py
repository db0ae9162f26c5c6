"""JSON access log lines, sampled.

``AccessLog(sink, sample=0.01, errors=True)`` logs about one request in a hundred, plus every
request answered with a 5xx or refused by the proxy when ``errors`` is on. A proxied request's
line is formatted directly (``request``: its fields are the proxy's own names and numbers, only
the path and the error are JSON-escaped, and only when they need it); other lines go through
``json.dumps``. Lines are buffered; ``flush()`` (called on the engine's timer tick and at
shutdown) writes them in one call, so logging costs no system call per request.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any, Protocol


class Sink(Protocol):
    def write(self, text: str, /) -> Any: ...

    def flush(self) -> Any: ...


class AccessLog:
    __slots__ = ("_buffer", "_random", "errors", "lines", "sample", "sink")

    def __init__(self, sink: Sink, *, sample: float = 1.0, errors: bool = True) -> None:
        if not 0.0 <= sample <= 1.0:
            raise ValueError("sample must be between 0 and 1")
        self.sink = sink
        self.sample = sample
        self.errors = errors
        self.lines = 0
        self._buffer: list[str] = []
        self._random = random.random

    def wanted(self, status: int) -> bool:
        """Whether a request that ended with ``status`` (0: no response) is logged."""
        if self.errors and (status >= 500 or status == 0 or status in (400, 408, 414, 431)):
            return True
        return self.sample >= 1.0 or (self.sample > 0.0 and self._random() < self.sample)

    @staticmethod
    def context(
        listener: str, service: str, client: str, identity: bytes, upstream: str, zone: str
    ) -> tuple[str, str]:
        """The fields a connection's requests to one upstream share, as the two JSON fragments
        ``request`` puts around the per-request ones (made once per connection and upstream)."""
        return (
            f'"listener":"{listener}","service":"{service}"',
            f'"client":"{client}","identity":"{identity.decode()}","upstream":"{upstream}","zone":"{zone}"',
        )

    def request(
        self, request_id: bytes, method: bytes, target: bytes, status: int, seconds: float, bytes_in: int,
        bytes_out: int, context: tuple[str, str], error: str = "",
    ) -> None:  # fmt: skip
        """One proxied request's line (the hot path: no dict, no encoder)."""
        path = target[:512].decode("latin-1")
        if not (path.isascii() and path.isprintable()) or '"' in path or "\\" in path:
            path = json.dumps(path, ensure_ascii=False)[1:-1]
        self._buffer.append(
            '{"ts":%.3f,"id":"%s",%s,"method":"%s","path":"%s","status":%d,'  # noqa: UP031
            '"duration_ms":%.3f,"bytes_in":%d,"bytes_out":%d,%s%s}'
            % (
                time.time(),
                request_id.decode(),
                context[0],
                method.decode("latin-1"),
                path,
                status,
                seconds * 1000,
                bytes_in,
                bytes_out,
                context[1],
                ',"error":' + json.dumps(error) if error else "",
            )
        )
        self.lines += 1
        if len(self._buffer) >= 512:
            self.flush()

    def log(self, entry: dict[str, Any]) -> None:
        entry["ts"] = round(time.time(), 3)
        self._buffer.append(json.dumps(entry, separators=(",", ":"), ensure_ascii=False))
        self.lines += 1
        if len(self._buffer) >= 512:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        text = "\n".join(self._buffer) + "\n"
        self._buffer.clear()
        try:
            self.sink.write(text)
            self.sink.flush()
        except (OSError, ValueError):  # a closed or full sink must not stop the data path
            pass
