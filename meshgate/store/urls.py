"""Open a store from its URL: ``sqlite:PATH`` or ``etcd://HOST:PORT[,HOST:PORT...][/PREFIX]``.

Query parameters (both backends): ``max-txn-ops`` and ``max-request-bytes`` (what one
atomic apply may hold; etcd's server defaults are 128 and 1572864: raise them only if the
etcd cluster was started with larger ``--max-txn-ops`` / ``--max-request-bytes``).
SQLite only: ``history`` (revisions of change history kept for watches, default 100000).
etcd only: ``timeout`` (seconds per call, default 8), ``ca``, ``cert``, ``key`` (PEM files
for TLS/mTLS to etcd; ``etcds://`` requires ``ca``), ``server-name`` (the name in etcd's
server certificate, needed with TLS and several endpoints).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from meshgate.store.interface import Limits, Store
from meshgate.store.sqlite import DEFAULT_LIMITS, SqliteStore


class StoreUrlError(ValueError):
    pass


def _limits(query: dict[str, list[str]]) -> Limits:
    try:
        return Limits(
            max_ops=int(query.get("max-txn-ops", [DEFAULT_LIMITS.max_ops])[0]),
            max_bytes=int(query.get("max-request-bytes", [DEFAULT_LIMITS.max_bytes])[0]),
        )
    except ValueError as exc:
        raise StoreUrlError(f"store URL limits must be integers: {exc}") from None


async def open_store(url: str) -> Store:
    if url.startswith("sqlite:"):
        rest = url.removeprefix("sqlite:").removeprefix("//")
        path, _, raw_query = rest.partition("?")
        if not path:
            raise StoreUrlError("sqlite: needs a file path, e.g. sqlite:/var/lib/meshgate/store.db")
        query = parse_qs(raw_query)
        try:
            history = int(query.get("history", ["100000"])[0])
        except ValueError:
            raise StoreUrlError("sqlite: history must be a number of revisions") from None
        return await SqliteStore.open(Path(path), limits=_limits(query), history=history)
    if url.startswith(("etcd://", "etcds://")):
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        endpoints = [e for e in parts.netloc.split(",") if e]
        if not endpoints:
            raise StoreUrlError("etcd:// needs at least one HOST:PORT")
        tls = {
            k: await asyncio.to_thread(Path(query[k][0]).read_bytes)
            for k in ("ca", "cert", "key")
            if k in query
        }
        if parts.scheme == "etcds" and "ca" not in tls:
            raise StoreUrlError("etcds:// needs ca=FILE (the CA of etcd's server certificate)")
        from meshgate.store.etcd import EtcdStore  # imports gRPC: only when asked for

        return await EtcdStore.open(
            endpoints,
            prefix=parts.path.rstrip("/") or "/meshgate",
            limits=_limits(query),
            timeout=float(query.get("timeout", ["8"])[0]),
            ca_cert=tls.get("ca"),
            cert_chain=tls.get("cert"),
            cert_key=tls.get("key"),
            tls_server_name=query.get("server-name", [None])[0],
        )
    raise StoreUrlError(f"unknown store URL {url!r}: use sqlite:PATH or etcd://HOST:PORT,...")
