"""The requests a workload received with an ``X-Request-Tag``: the newest ``limit`` of them.

With a ``journal`` file each record is also appended to it (one JSON line, written before the
request is answered) and the journal is read back at start: a workload killed and started again
(a lab's failure scenario) still lists what it received before, so a client's acknowledged
request is never reported lost because its workload died afterwards.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

DEFAULT_LIMIT = 100_000


@dataclass
class Ledger:
    limit: int = DEFAULT_LIMIT
    now: Callable[[], float] = time.time  # wall-clock seconds: compared with a client's ledger
    total: int = 0
    journal: Path | None = None
    _records: deque[dict[str, Any]] = field(init=False)
    _journal: IO[str] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError("a ledger keeps at least one record")
        self._records = deque(maxlen=self.limit)
        if self.journal is not None:
            cut = False
            if self.journal.exists():
                with self.journal.open(encoding="utf-8") as lines:
                    for line in lines:
                        cut = not line.endswith("\n")  # cut short by a kill: never answered
                        try:
                            entry = json.loads(line)
                        except json.JSONDecodeError:
                            continue  # a cut line, ended by the next start
                        if not cut:
                            self._records.append(entry)
                            self.total += 1
            self._journal = self.journal.open("a", encoding="utf-8")
            if cut:
                self._journal.write("\n")  # end it: it is skipped when read back

    def record(self, method: str, path: str, tag: str) -> None:
        entry = {"method": method, "path": path, "tag": tag, "time": self.now()}
        if self._journal is not None:
            self._journal.write(json.dumps(entry) + "\n")
            self._journal.flush()  # in the kernel's hands: a SIGKILL of this process loses nothing
        self._records.append(entry)
        self.total += 1

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    @property
    def dropped(self) -> int:
        """Records no longer kept (older than the newest ``limit``)."""
        return self.total - len(self._records)

    def records(self) -> list[dict[str, Any]]:
        return list(self._records)
