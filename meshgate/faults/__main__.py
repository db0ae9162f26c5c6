"""``python -m meshgate.faults --listen HOST:PORT --target HOST:PORT --admin HOST:PORT``

Runs a ``FaultProxy`` and a tiny HTTP/1.1 admin endpoint (one request per connection):

- ``GET /faults``: the faults in force (JSON);
- ``PUT /faults``: replace them (a JSON object; absent fields take their defaults); 400 with
  ``{"error", "violations": [{"path", "message"}]}`` when invalid;
- ``POST /reset``: reset every open connection (``{"reset": n}``);
- ``GET /stats``: counters (accepted, open, refused, resets, upstream_errors, bytes each way).

Prints one JSON line ``{"listening": port, "admin": port}`` on stdout once both listen; stops on
SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Sequence
from typing import Any, Final

from meshgate.faults.faults import Faults, FaultsError
from meshgate.faults.proxy import FaultProxy
from meshgate.lifecycle import until_signal

MAX_BODY: Final = 64 * 1024
MAX_HEAD: Final = 16 * 1024
REQUEST_TIMEOUT: Final = 10.0
_REASONS: Final = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout", 413: "Content Too Large"}  # fmt: skip


def host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


class AdminError(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


class Admin:
    """The admin endpoint of one proxy."""

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        routes = {"/faults": ("GET", "PUT"), "/reset": ("POST",), "/stats": ("GET",)}
        if path not in routes:
            raise AdminError(404, {"error": f"no such path {path!r}"})
        if method not in routes[path]:
            raise AdminError(405, {"error": f"{method} not allowed on {path}; use {', '.join(routes[path])}"})
        if path == "/faults" and method == "GET":
            return 200, self.proxy.faults.to_json()
        if path == "/faults":
            try:
                faults = Faults.from_json(body)
            except FaultsError as exc:
                raise AdminError(
                    400, {"error": "invalid faults", "violations": [v.to_json() for v in exc.violations]}
                ) from None
            self.proxy.set(faults)
            return 200, faults.to_json()
        if path == "/reset":
            return 200, {"reset": self.proxy.reset_existing()}
        return 200, self.proxy.stats_json()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                status, answer = await self._exchange(reader)
        except AdminError as exc:
            status, answer = exc.status, exc.body
        except TimeoutError:
            status, answer = 408, {"error": "request not received in time"}
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.close()
            return
        payload = json.dumps(answer).encode() + b"\n"
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
        )
        with contextlib.suppress(OSError):
            writer.write(head.encode() + payload)
            await writer.drain()
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    async def _exchange(self, reader: asyncio.StreamReader) -> tuple[int, Any]:
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > MAX_HEAD:
            raise AdminError(400, {"error": "request head too large"})
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise AdminError(400, {"error": "bad request line"})
        method, target, _ = parts
        length = 0
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep and name.strip().lower() == "content-length":
                if not value.strip().isdigit():
                    raise AdminError(400, {"error": "bad Content-Length"})
                length = int(value.strip())
        if length > MAX_BODY:
            raise AdminError(413, {"error": f"body over {MAX_BODY} bytes"})
        body = await reader.readexactly(length) if length else b""
        return self.handle(method, target.split("?", 1)[0], body)


async def run(args: argparse.Namespace) -> None:
    faults = Faults(
        delay=args.delay,
        jitter=args.jitter,
        bandwidth=args.bandwidth,
        reset_after=args.reset_after,
        stall=args.stall,
        refuse=args.refuse,
    )
    proxy = FaultProxy(args.listen, args.target, faults)
    await proxy.start()
    admin = Admin(proxy)
    host, port = args.admin
    server = await asyncio.start_server(admin.serve, host, port, limit=MAX_HEAD)
    try:
        admin_port = server.sockets[0].getsockname()[1]
        print(json.dumps({"listening": proxy.port, "admin": admin_port}), flush=True)
        await until_signal()
    finally:
        server.close()
        await proxy.stop()
        await server.wait_closed()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m meshgate.faults", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--listen", type=host_port, required=True, help="HOST:PORT to accept on (port 0: any)"
    )
    parser.add_argument("--target", type=host_port, required=True, help="HOST:PORT to relay to")
    parser.add_argument("--admin", type=host_port, required=True, help="HOST:PORT of the admin endpoint")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds added each way")
    parser.add_argument("--jitter", type=float, default=0.0, help="seconds of delay variation (+/-)")
    parser.add_argument("--bandwidth", type=int, default=None, help="bytes per second per direction")
    parser.add_argument("--reset-after", type=int, default=None, help="reset connections after N bytes")
    parser.add_argument("--stall", action="store_true", help="accept, forward nothing")
    parser.add_argument("--refuse", action="store_true", help="reset new connections at once")
    args = parser.parse_args(argv)
    try:
        asyncio.run(run(args))
    except FaultsError as exc:
        print(f"invalid faults: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
