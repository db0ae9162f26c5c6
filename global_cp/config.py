"""How a global CP is started: everything ``meshgate global-cp run`` accepts."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

DEFAULT_PORT = 5680
DEFAULT_LISTEN = f"127.0.0.1:{DEFAULT_PORT}"
DEFAULT_TRUST_DOMAIN = "meshgate.local"
DEFAULT_ZONE_PORT = 5685
DEFAULT_ZONE_LISTEN = f"127.0.0.1:{DEFAULT_ZONE_PORT}"


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "meshgate" / "global-cp"


@dataclass(frozen=True)
class GlobalCPConfig:
    data_dir: Path
    store_url: str | None = None  # default: sqlite:<data_dir>/store.db
    listen: str = DEFAULT_LISTEN
    kek_file: Path | None = None  # default: <data_dir>/kek
    admin_token_file: Path | None = None  # default: <data_dir>/admin-token
    trust_domain: str = DEFAULT_TRUST_DOMAIN  # of the mesh "default", made on first start
    tls_cert: Path | None = None
    tls_key: Path | None = None
    address_file: Path | None = None  # written with the API URL once listening
    zone_listen: str = DEFAULT_ZONE_LISTEN  # enrollment and sync for zone CPs (TLS from the mesh CA)
    zone_names: tuple[str, ...] = ()  # extra DNS names / IPs zones use to reach zone_listen
    zone_address_file: Path | None = None
    replica: str = ""  # name of this replica in zone status (default: host:pid)
    max_body: int = 4 * 1024 * 1024
    root_ttl: timedelta = timedelta(days=3650)
    heartbeat: float = 15.0

    @property
    def store(self) -> str:
        return self.store_url or f"sqlite:{self.data_dir / 'store.db'}"

    @property
    def kek(self) -> Path:
        return self.kek_file or self.data_dir / "kek"

    @property
    def admin_token(self) -> Path:
        return self.admin_token_file or self.data_dir / "admin-token"

    def host_port(self) -> tuple[str, int]:
        return split_host_port(self.listen, "--listen")

    def zone_host_port(self) -> tuple[str, int]:
        return split_host_port(self.zone_listen, "--zone-listen")


def split_host_port(value: str, flag: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{flag} must be HOST:PORT, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 - operator's choice
