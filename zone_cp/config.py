"""How a zone CP is started: everything ``meshgate zone-cp run`` accepts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

DEFAULT_LISTEN = "127.0.0.1:5681"
DEFAULT_PROXY_LISTEN = "127.0.0.1:5682"


@dataclass(frozen=True)
class ZoneCPConfig:
    zone: str
    global_url: str  # the global CP's zone-facing listener, https://HOST:5685
    data_dir: Path
    token_file: Path | None = None  # needed for the first start only (enrollment)
    listen: str = DEFAULT_LISTEN
    address_file: Path | None = None
    proxy_listen: str = DEFAULT_PROXY_LISTEN  # enrollment, renewal, registration, config (TLS)
    proxy_address_file: Path | None = None
    cert_ttl: timedelta = timedelta(hours=24)  # of the zone CP's own client certificate
    reconnect_initial: float = 0.5
    reconnect_max: float = 30.0
    heartbeat: float = 10.0

    @property
    def store_path(self) -> Path:
        return self.data_dir / "zone.db"

    @property
    def pki_dir(self) -> Path:
        return self.data_dir / "pki"
