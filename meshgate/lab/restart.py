"""docker's restart policies for a node's ``cmd``, without I/O.

containerlab's linux kind defaults to ``always``. A restart waits 100 ms, doubled after each
restart up to a minute, back to 100 ms once the process ran 10 s (docker's backoff). ``down``
and ``exec`` never count as the process stopping by itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from meshgate.lab.model import RestartPolicy

FIRST_DELAY: Final = 0.1
MAX_DELAY: Final = 60.0
STABLE_AFTER: Final = 10.0


def should_restart(policy: RestartPolicy, exit_code: int, *, stopped_by_user: bool = False) -> bool:
    if stopped_by_user or policy == "no":
        return False
    if policy == "on-failure":
        return exit_code != 0
    return True


@dataclass
class Backoff:
    delay: float = FIRST_DELAY

    def next_delay(self, ran_for: float) -> float:
        """The wait before the next start, given how long the process just ran."""
        if ran_for >= STABLE_AFTER:
            self.delay = FIRST_DELAY
        delay = self.delay
        self.delay = min(self.delay * 2, MAX_DELAY)
        return delay
