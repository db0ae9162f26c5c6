"""etcd endpoints as etcd3aio can dial them.

etcd3aio 0.3.0 builds one gRPC channel with the ``ipv4:`` target scheme: it accepts IPv4
literals only (and rewrites the substring ``localhost`` to ``127.0.0.1``). So DNS names are
resolved here, once, at open, and with TLS the certificate is checked against the name the
user gave (``tls_server_name``), since the channel itself only knows addresses.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Dialable:
    addresses: list[str]  # "a.b.c.d:port"
    tls_server_name: str | None


def split(endpoint: str) -> tuple[str, int]:
    text = endpoint.removeprefix("https://").removeprefix("http://").rstrip("/")
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"etcd endpoint {endpoint!r} is not HOST:PORT")
    return host, int(port)


async def resolve(endpoints: Sequence[str], *, tls: bool, tls_server_name: str | None) -> Dialable:
    if not endpoints:
        raise ValueError("no etcd endpoints given")
    loop = asyncio.get_running_loop()
    addresses: list[str] = []
    hosts: list[str] = []
    for endpoint in endpoints:
        host, port = split(endpoint)
        hosts.append(host)
        try:
            infos = await loop.getaddrinfo(host, port, family=socket.AF_INET, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise ValueError(
                f"etcd endpoint {endpoint!r}: no IPv4 address ({exc}); the etcd client "
                "connects over IPv4 only"
            ) from exc
        for *_, sockaddr in infos:
            address = f"{sockaddr[0]}:{port}"
            if address not in addresses:
                addresses.append(address)
    if tls and tls_server_name is None:
        if len(set(hosts)) > 1:
            raise ValueError(
                "TLS to several etcd hosts needs tls_server_name: a DNS name that every "
                "member's certificate carries (the client dials them as one channel)"
            )
        tls_server_name = hosts[0]
    return Dialable(addresses, tls_server_name if tls else None)
