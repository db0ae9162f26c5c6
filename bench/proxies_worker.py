"""A process carrying simulated proxies for the ``proxies`` scenario, driven over its stdin/stdout.

Run as ``python -m bench.proxies_worker``: one uvloop event loop with its share of the
``SimProxy``s. The scenario's process keeps the global CP's side (operator, simulated zones,
zone CP polling) on its own loop, so snapshots decoded here never starve those connections,
and the proxies' work spreads over the machine's cores.

Each line on stdin is a command ``{"id": n, "op": ..., ...}``; each reply is one line
``{"id": n, ...}`` (``"error"`` when the command failed). One line is not a reply:
``{"event": "done", "key": ...}`` when every proxy here applied the armed write. Times are
``time.monotonic()``, which is the system's CLOCK_MONOTONIC: the same clock in every process.
EOF on stdin stops the worker (so it dies with the scenario).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TextIO

from bench.proxies_sim import ProxyProbe, SimProxy
from zones.enroll import ZoneCP

MAX_LINE = 1 << 26  # a command or reply listing hundreds of proxies (tokens, snapshot figures)


# --- the worker ----------------------------------------------------------------------------------


class Worker:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.proxies: dict[str, SimProxy] = {}
        self.probe = ProxyProbe(0)
        self._watch: asyncio.Task[None] | None = None

    def emit(self, message: dict[str, Any]) -> None:
        self.out.write(json.dumps(message, allow_nan=True) + "\n")
        self.out.flush()

    async def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        op = command["op"]
        handlers: dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]] = {
            "add": self.add, "enroll": self.enroll, "connect": self.connect, "close": self.close,
            "arm": self.arm, "collect": self.collect, "state": self.state,
        }  # fmt: skip
        return await handlers[op](command)

    async def add(self, command: dict[str, Any]) -> dict[str, Any]:
        for spec in command["proxies"]:
            self.proxies[spec["name"]] = SimProxy(
                spec["name"], spec["zone"], ZoneCP.parse(spec["url"]), spec["service"], self.probe
            )
        return {}

    async def enroll(self, command: dict[str, Any]) -> dict[str, Any]:
        gate = asyncio.Semaphore(command["concurrency"])

        async def one(name: str, token: str) -> tuple[str, float]:
            async with gate:
                return name, await self.proxies[name].enroll(token)

        took = await asyncio.gather(*(one(name, token) for name, token in command["tokens"].items()))
        return {"seconds": dict(took)}

    async def connect(self, command: dict[str, Any]) -> dict[str, Any]:
        """The proxies named connect, ``concurrency`` at a time; each one's full sync."""
        gate = asyncio.Semaphore(command["concurrency"])
        cpu = time.process_time()

        async def one(name: str) -> tuple[str, dict[str, float]]:
            async with gate:
                proxy = self.proxies[name]
                proxy.connect()
                snapshot = await proxy.wait_snapshot(command["timeout"])
                times = {k: getattr(snapshot, k) for k in ("opened", "connected", "first_frame", "acked")}
                return name, {**snapshot.figures(), **times}

        done = await asyncio.gather(*(one(name) for name in command["names"]))
        return {"snapshots": dict(done), "cpu_s": time.process_time() - cpu}

    async def close(self, command: dict[str, Any]) -> dict[str, Any]:
        for name in command["names"]:
            await self.proxies[name].close()
        return {}

    async def arm(self, command: dict[str, Any]) -> dict[str, Any]:
        """Watch for the write that sets ``key``'s protocol; say ``done`` once all have it."""
        self._stop_watching()
        self.probe.proxies = len(self.proxies)
        self.probe.arm(command["key"], command["protocol"])
        key = command["key"]

        async def watch() -> None:
            await self.probe.done.wait()
            self.emit({"event": "done", "key": key})

        self._watch = asyncio.create_task(watch())
        return {}

    async def collect(self, command: dict[str, Any]) -> dict[str, Any]:
        hits = dict(self.probe.hits)
        self.probe.disarm()
        self._stop_watching()
        return {"hits": hits}

    async def state(self, command: dict[str, Any]) -> dict[str, Any]:
        return {
            "writes_applied": {n: p.writes_applied for n, p in self.proxies.items()},
            "snapshot_resources": {
                n: p.snapshot.resources if p.snapshot else 0 for n, p in self.proxies.items()
            },
            "failed": {n: p.error for n, p in self.proxies.items() if p.failed.is_set()},
        }

    def _stop_watching(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None

    async def shutdown(self) -> None:
        self._stop_watching()
        for proxy in self.proxies.values():
            await proxy.close()


async def serve(stdin: TextIO, stdout: TextIO) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_LINE)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), stdin)
    worker = Worker(stdout)
    try:
        while line := await reader.readline():
            command = json.loads(line)
            try:
                reply = await worker.handle(command)
            except Exception as exc:
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            worker.emit({"id": command["id"], **reply})
    finally:
        await worker.shutdown()


def main() -> None:
    import uvloop

    uvloop.run(serve(sys.stdin, sys.stdout))


# --- the scenario's side -----------------------------------------------------------------------


class WorkerError(Exception):
    """A worker answered a command with an error, or went away."""


class ProxyWorker:
    """One worker process, as the scenario drives it."""

    def __init__(self, index: int, proc: asyncio.subprocess.Process) -> None:
        self.index, self.proc = index, proc
        self.names: list[str] = []
        self.armed = ""  # the key of the write being measured
        self.done = asyncio.Event()  # every proxy here applied it
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next = 0
        self._reader = asyncio.create_task(self._read(), name=f"proxy-worker-{index}")

    @classmethod
    async def start(cls, index: int, log: Path, cwd: Path) -> ProxyWorker:
        with log.open("ab") as stderr:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.proxies_worker", stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=stderr, cwd=cwd, limit=MAX_LINE,
            )  # fmt: skip
        return cls(index, proc)

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def call(self, op: str, **arguments: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self._next += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[self._next] = future
        self.proc.stdin.write((json.dumps({"id": self._next, "op": op, **arguments}) + "\n").encode())
        await self.proc.stdin.drain()
        reply = await future
        if "error" in reply:
            raise WorkerError(f"proxy worker {self.index}: {op}: {reply['error']}")
        return reply

    async def arm(self, key: str, protocol: str) -> None:
        self.armed = key
        self.done.clear()
        await self.call("arm", key=key, protocol=protocol)

    async def collect(self) -> dict[str, float]:
        """When each proxy here applied the armed write (those that did); disarms."""
        reply = await self.call("collect")
        self.armed = ""
        hits: dict[str, float] = reply["hits"]
        return hits

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            while line := await self.proc.stdout.readline():
                message = json.loads(line)
                if message.get("event") == "done":
                    if message["key"] == self.armed:
                        self.done.set()
                elif (future := self._replies.pop(message["id"], None)) is not None:
                    future.set_result(message)
        finally:
            gone = WorkerError(f"proxy worker {self.index} exited ({self.proc.returncode})")
            for future in self._replies.values():
                if not future.done():
                    future.set_exception(gone)
            self._replies.clear()

    async def stop(self, timeout: float = 10.0) -> None:
        """Close its stdin (it closes its proxies and exits); kill it if it does not."""
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


if __name__ == "__main__":
    main()
