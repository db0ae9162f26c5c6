"""Jittered exponential backoff for reconnect loops ("full jitter": uniform in [0, cap])."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    initial: float = 0.5
    maximum: float = 30.0
    rng: random.Random = field(default_factory=random.Random)
    _ceiling: float = 0.0

    def next(self) -> float:
        self._ceiling = min(self.maximum, max(self.initial, self._ceiling * 2))
        return self.rng.uniform(self.initial / 2, self._ceiling)

    def reset(self) -> None:
        self._ceiling = 0.0
