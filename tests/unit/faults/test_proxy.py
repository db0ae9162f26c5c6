"""The fault proxy over real loopback sockets, on asyncio's loop and on uvloop: relaying and
half-close, added round-trip time (also of a TLS handshake), jitter without reordering, the
bandwidth cap, backpressure, resets, stalls, refusals, and faults changed on open connections.

Timing assertions are lower bounds (the delay is never less than asked for) or generous upper
bounds: the machine is shared and noisy.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import random
import socket
import ssl
import statistics
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from meshgate.faults import FaultProxy, Faults
from meshgate.faults.proxy import HIGH_WATER
from tests.support.faults import EchoServer, ThreadedFaultProxy

T = TypeVar("T")
LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}
Runner = Callable[..., T]


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Runner[Any]:
    factory = LOOPS[request.param]

    def runner(coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        async def bounded() -> T:
            async with asyncio.timeout(timeout):
                return await coro

        with asyncio.Runner(loop_factory=factory) as r:
            return r.run(bounded())

    return runner


class Backend:
    """An asyncio server behind the proxy: echoes, or (``SEND n``) sends n bytes and closes;
    records how each connection ended."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0
        self.ends: list[str] = []
        self.ended = asyncio.Event()
        self._open: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}

    async def start(self) -> Backend:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._open[task] = writer
        try:
            first = await reader.read(65536)
            if first.startswith(b"SEND "):
                size = int(first.split()[1])
                block = b"x" * 65536
                while size > 0:
                    writer.write(block[: min(size, len(block))])
                    size -= len(block)
                    await writer.drain()
            else:
                data = first
                while data:
                    writer.write(data)
                    await writer.drain()
                    data = await reader.read(65536)
            self.ends.append("eof")
        except (ConnectionResetError, BrokenPipeError):
            self.ends.append("reset")
        finally:
            self._open.pop(task, None)
            self.ended.set()
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def stop(self) -> None:
        """Stop listening and end every connection (its handler ends on the reset)."""
        if self.server is not None:
            self.server.close()
        tasks = list(self._open)
        for writer in self._open.values():
            writer.transport.abort()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.server is not None:
            await self.server.wait_closed()


@contextlib.asynccontextmanager
async def proxied(faults: Faults | None = None, **kwargs: Any) -> AsyncIterator[tuple[FaultProxy, Backend]]:
    backend = await Backend().start()
    proxy = FaultProxy(("127.0.0.1", 0), ("127.0.0.1", backend.port), faults, **kwargs)
    await proxy.start()
    try:
        yield proxy, backend
    finally:
        await proxy.stop()
        await backend.stop()


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def round_trip(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes = b"ping"
) -> float:
    started = time.monotonic()
    writer.write(data)
    assert await reader.readexactly(len(data)) == data
    return time.monotonic() - started


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


def test_relays_both_ways_and_half_close(run: Runner[None]) -> None:
    async def main() -> None:
        async with proxied() as (proxy, backend):
            reader, writer = await connect(proxy.port)
            assert await round_trip(reader, writer, b"hello" * 1000) >= 0
            assert proxy.open == 1
            writer.write_eof()  # the backend sees the end, answers with its own
            assert await reader.read() == b""
            await backend.ended.wait()
            assert backend.ends == ["eof"]
            await close(writer)
            stats = proxy.stats_json()
            assert stats["accepted"] == 1
            assert stats["bytes_to_target"] == stats["bytes_to_client"] == 5000
            assert stats["resets"] == 0

    run(main())


def test_delay_adds_two_delays_to_every_round_trip(run: Runner[None]) -> None:
    delay = 0.05

    async def main() -> None:
        async with proxied(Faults(delay=delay)) as (proxy, backend):
            direct_reader, direct_writer = await connect(backend.port)
            direct = [await round_trip(direct_reader, direct_writer) for _ in range(5)]
            reader, writer = await connect(proxy.port)
            through = [await round_trip(reader, writer) for _ in range(5)]
            print(f"\n[figure] RTT direct {statistics.median(direct) * 1e3:.2f} ms, through a {delay * 1e3:.0f} ms "
                  f"proxy {statistics.median(through) * 1e3:.2f} ms")  # fmt: skip
            assert min(through) >= 2 * delay
            assert statistics.median(through) < 2 * delay + 1.0  # generous: a shared machine
            await close(writer)
            await close(direct_writer)

    run(main())


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_file, key_file


def test_a_tls_handshake_through_it_takes_two_delays_more(run: Runner[None], tmp_path: Path) -> None:
    delay = 0.05
    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))

    async def main() -> None:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ssl.SSLError):
                writer.write(await reader.read(100))
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        proxy = FaultProxy(("127.0.0.1", 0), ("127.0.0.1", port), Faults(delay=delay))
        await proxy.start()
        try:
            timings = {}
            for name, target in (("direct", port), ("proxied", proxy.port)):
                started = time.monotonic()
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", target, ssl=client_ctx, server_hostname="localhost"
                )
                timings[name] = time.monotonic() - started
                writer.write(b"tls")
                assert await reader.read(100) == b"tls"
                await close(writer)
            print(f"\n[figure] TLS handshake direct {timings['direct'] * 1e3:.1f} ms, "
                  f"through a {delay * 1e3:.0f} ms proxy {timings['proxied'] * 1e3:.1f} ms")  # fmt: skip
            assert timings["proxied"] >= 2 * delay
        finally:
            await proxy.stop()
            server.close()
            await server.wait_closed()

    run(main())


def test_jitter_varies_the_delay_but_never_reorders(run: Runner[None]) -> None:
    async def main() -> None:
        faults = Faults(delay=0.02, jitter=0.015)
        async with proxied(faults, rng=random.Random(7)) as (proxy, _):
            reader, writer = await connect(proxy.port)
            expected = b"".join(b"%05d" % i for i in range(200))
            for i in range(200):  # 200 small writes, each its own chunk with its own jitter
                writer.write(b"%05d" % i)
                await asyncio.sleep(0)
            assert await reader.readexactly(len(expected)) == expected
            rtts = [await round_trip(reader, writer) for _ in range(8)]
            assert min(rtts) >= 2 * (0.02 - 0.015)
            await close(writer)

    run(main())


def test_bandwidth_cap_holds(run: Runner[None]) -> None:
    cap, size = 200_000, 300_000

    async def main() -> None:
        async with proxied(Faults(bandwidth=cap)) as (proxy, _):
            reader, writer = await connect(proxy.port)
            started = time.monotonic()
            writer.write(f"SEND {size}\n".encode())
            received = 0
            while chunk := await reader.read(65536):
                received += len(chunk)
            elapsed = time.monotonic() - started
            print(f"\n[figure] {size} bytes at a cap of {cap} B/s: {received / elapsed:.0f} B/s")
            assert received == size
            assert received / elapsed <= cap * 1.2
            await close(writer)

    run(main())


def test_backpressure_bounds_what_it_holds(run: Runner[None]) -> None:
    async def main() -> None:
        async with proxied(Faults(bandwidth=50_000)) as (proxy, _):
            _, writer = await connect(proxy.port)
            writer.write(b"x" * (16 * 1024 * 1024))  # far more than the cap moves in the test
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await writer.drain()  # does not finish: the proxy stopped reading
            assert writer.transport.get_write_buffer_size() > 0
            connection = next(iter(proxy._connections))
            held = connection.to_up.queued + connection.to_down.queued
            assert held <= HIGH_WATER + 512 * 1024  # the high-water mark plus a read or two
            writer.transport.abort()

    run(main())


def test_reset_after_resets_both_sides(run: Runner[None]) -> None:
    async def main() -> None:
        async with proxied(Faults(reset_after=1000)) as (proxy, backend):
            reader, writer = await connect(proxy.port)
            writer.write(b"a" * 600)  # 600 to the backend, then 400 of the 600 echoed: 1000
            received = bytearray()

            async def read_all() -> None:
                while chunk := await reader.read(65536):
                    received.extend(chunk)

            with pytest.raises(ConnectionResetError):
                await read_all()
            assert len(received) <= 400
            await backend.ended.wait()
            assert backend.ends == ["reset"]
            assert proxy.stats.resets == 1
            assert proxy.open == 0
            await close(writer)

    run(main())


def test_stall_holds_everything_until_cleared(run: Runner[None]) -> None:
    async def main() -> None:
        async with proxied(Faults(stall=True)) as (proxy, _):
            reader, writer = await connect(proxy.port)
            writer.write(b"held")
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):
                    await reader.readexactly(4)
            assert proxy.open == 1
            proxy.set(Faults())  # applies to the open connection
            async with asyncio.timeout(5):
                assert await reader.readexactly(4) == b"held"
            await close(writer)

    run(main())


def test_refuse_resets_new_connections_only(run: Runner[None]) -> None:
    async def main() -> None:
        async with proxied() as (proxy, _):
            reader, writer = await connect(proxy.port)
            await round_trip(reader, writer)
            proxy.set(Faults(refuse=True))
            refused_reader, refused_writer = await connect(proxy.port)
            with pytest.raises(ConnectionResetError):
                await refused_reader.read(10)
            await round_trip(reader, writer)  # the open connection is not affected
            assert proxy.stats.refused == 1
            assert proxy.stats.accepted == 2
            await close(refused_writer)
            await close(writer)

    run(main())


def test_set_changes_open_connections_and_reset_existing(run: Runner[None]) -> None:
    async def main() -> None:
        async with proxied() as (proxy, backend):
            reader, writer = await connect(proxy.port)
            await round_trip(reader, writer)
            proxy.set(Faults(delay=0.1))
            assert await round_trip(reader, writer) >= 0.2
            proxy.set(Faults())
            assert proxy.reset_existing() == 1
            with pytest.raises(ConnectionResetError):
                await reader.read(10)
            await backend.ended.wait()
            assert backend.ends == ["reset"]
            assert proxy.stats.resets == 1
            await close(writer)

    run(main())


def test_reset_after_lowered_below_what_an_open_connection_moved(run: Runner[None]) -> None:
    async def main() -> None:
        async with proxied() as (proxy, _):
            reader, writer = await connect(proxy.port)
            await round_trip(reader, writer, b"x" * 100)  # 200 bytes moved
            proxy.set(Faults(reset_after=150))
            with pytest.raises(ConnectionResetError):
                await reader.read(10)
            await close(writer)

    run(main())


def test_an_unreachable_target_resets_the_client(run: Runner[None]) -> None:
    async def main() -> None:
        backend = await Backend().start()
        port = backend.port
        await backend.stop()  # nothing listens there any more
        proxy = FaultProxy(("127.0.0.1", 0), ("127.0.0.1", port))
        await proxy.start()
        try:
            reader, writer = await connect(proxy.port)
            with pytest.raises(ConnectionResetError):
                await reader.read(10)
            assert proxy.stats.upstream_errors == 1
            await close(writer)
        finally:
            await proxy.stop()

    run(main())


def test_threaded_proxy_for_blocking_tests() -> None:
    with EchoServer() as echo, ThreadedFaultProxy(echo.address, Faults(delay=0.02)) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as conn:
            started = time.monotonic()
            conn.sendall(b"hi")
            assert conn.recv(10) == b"hi"
            assert time.monotonic() - started >= 0.04
            proxy.set(Faults(reset_after=0))
            with pytest.raises(ConnectionResetError):
                conn.recv(10)
        assert proxy.stats()["resets"] == 1
