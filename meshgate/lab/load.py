"""A load client that keeps a ledger, run inside a lab node (a client network namespace).

``python -m meshgate.lab.load --url http://VIP:PORT/path --host H [--threads N] [--seconds S]
[--method GET|POST] [--keepalive] [--run ID]`` sends requests from N threads for S seconds and
prints a first JSON line ``{"started": T}`` and, at the end, one JSON document: every request
with its tag (``X-Request-Tag: <run>-<thread>-<n>``, which the sample workload records), method,
its connection's open time, start and end (monotonic seconds), its outcome (``ok``, ``reset``,
``refused``, ``timeout``, ``error:<type>``, ``http-<status>``) and the ``X-Meshgate-Edge`` /
``X-Meshgate-Zone`` that served it. Nothing is retried: a failure is a failure (the caller
reconciles the ledger against what workloads received, see ``meshgate.lab.ledger``).
Stdlib only, so it starts fast and runs with any Python in a node.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import sys
import threading
import time
import urllib.parse
from typing import Any


def _outcome(exc: BaseException) -> str:
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return "reset"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timeout"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "reset"
    return f"error:{type(exc).__name__}"


def worker(
    url: str, host: str, until: float, keepalive: bool, ledger: list[dict[str, Any]], lock: threading.Lock,
    *, method: str = "GET", run: str = "load", index: int = 0,
) -> None:  # fmt: skip
    parts = urllib.parse.urlsplit(url)
    conn: http.client.HTTPConnection | None = None
    opened = 0.0
    number = 0
    while time.monotonic() < until:
        number += 1
        if conn is None:
            conn = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=5)
            opened = time.monotonic()
        started = time.monotonic()
        tag = f"{run}-{index}-{number}"
        record: dict[str, Any] = {
            "tag": tag,
            "method": method,
            "opened": opened,
            "start": started,
            "thread": index,
        }
        try:
            if conn.sock is None:
                conn.connect()
                record["opened"] = opened = time.monotonic()
            headers = {"Host": host, "X-Request-Tag": tag}
            if not keepalive:
                headers["Connection"] = "close"
            body = tag.encode() if method == "POST" else None
            conn.request(method, parts.path or "/", body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            record["outcome"] = "ok" if response.status == 200 else f"http-{response.status}"
            record["edge"] = response.getheader("x-meshgate-edge", "")
            record["zone"] = response.getheader("x-meshgate-zone", "")
            if not keepalive or response.getheader("connection", "").lower() == "close":
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException) as exc:
            record["outcome"] = _outcome(exc)
            if conn is not None:
                conn.close()
            conn = None
        record["end"] = time.monotonic()
        with lock:
            ledger.append(record)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--keepalive", action="store_true")
    parser.add_argument("--method", choices=("GET", "POST"), default="GET")
    parser.add_argument("--run", default="load", help="tag prefix, unique per run")
    args = parser.parse_args()
    ledger: list[dict[str, Any]] = []
    lock = threading.Lock()
    until = time.monotonic() + args.seconds
    print(json.dumps({"started": time.monotonic()}), flush=True)
    threads = [
        threading.Thread(
            target=worker,
            args=(args.url, args.host, until, args.keepalive, ledger, lock),
            kwargs={"method": args.method, "run": args.run, "index": index},
        )
        for index in range(args.threads)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps({"requests": ledger}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
