"""What a proxy keeps on disk to restart without its zone CP: its identity (certificate chain,
key, roots) and its last good configuration. Each file replaced atomically, mode 0600."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshgate.files import write_secret_file


@dataclass
class Identity:
    spiffe_id: str
    chain_pem: str  # leaf, then intermediates
    key_pem: str
    roots_pem: tuple[str, ...]
    trust_domain: str
    zone: str
    not_after: str

    def to_json(self) -> dict[str, Any]:
        return {
            "spiffeID": self.spiffe_id, "chain": self.chain_pem, "key": self.key_pem,
            "roots": list(self.roots_pem), "trustDomain": self.trust_domain, "zone": self.zone,
            "notAfter": self.not_after,
        }  # fmt: skip

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Identity:
        return cls(
            doc["spiffeID"], doc["chain"], doc["key"], tuple(doc["roots"]), doc["trustDomain"], doc["zone"],
            doc["notAfter"],
        )  # fmt: skip


class ProxyState:
    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    @property
    def _identity_file(self) -> Path:
        return self.dir / "identity.json"

    @property
    def _config_file(self) -> Path:
        return self.dir / "config.json"

    def load_identity(self) -> Identity | None:
        if not self._identity_file.exists():
            return None
        return Identity.from_json(json.loads(self._identity_file.read_text()))

    def save_identity(self, identity: Identity) -> None:
        write_secret_file(self._identity_file, json.dumps(identity.to_json()))

    def load_config(self) -> tuple[int, dict[str, dict[str, Any]]]:
        """The last configuration applied (version, documents by key), or (0, {})."""
        if not self._config_file.exists():
            return 0, {}
        doc = json.loads(self._config_file.read_text())
        return int(doc["version"]), dict(doc["documents"])

    def save_config(self, version: int, documents: dict[str, dict[str, Any]]) -> None:
        write_secret_file(self._config_file, json.dumps({"version": version, "documents": documents}))
