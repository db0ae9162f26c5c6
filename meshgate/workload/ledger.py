"""The requests a workload received with an ``X-Request-Tag``: the newest ``limit`` of them."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

DEFAULT_LIMIT = 100_000


@dataclass
class Ledger:
    limit: int = DEFAULT_LIMIT
    now: Callable[[], float] = time.time  # wall-clock seconds: compared with a client's ledger
    total: int = 0
    _records: deque[dict[str, Any]] = field(init=False)

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError("a ledger keeps at least one record")
        self._records = deque(maxlen=self.limit)

    def record(self, method: str, path: str, tag: str) -> None:
        self._records.append({"method": method, "path": path, "tag": tag, "time": self.now()})
        self.total += 1

    @property
    def dropped(self) -> int:
        """Records no longer kept (older than the newest ``limit``)."""
        return self.total - len(self._records)

    def records(self) -> list[dict[str, Any]]:
        return list(self._records)
