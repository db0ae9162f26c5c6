"""Faults a ``FaultProxy`` injects, and when each byte it relays is delivered. No I/O here.

``Faults`` is what an operator (or a test) asks for; ``from_json`` validates a JSON object and
reports every problem with its field path. ``schedule`` is the delivery timeline of one direction
of one connection: given a chunk read at ``now``, it says when each piece of it reaches the other
side, from the delay, a jitter sample and the bandwidth cap, and never lets a piece overtake an
earlier one (TCP delivers in order: jitter delays, it does not reorder).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Final

#: the longest delay or jitter accepted (seconds)
MAX_DELAY: Final = 3600.0
#: a bandwidth-limited chunk is delivered in pieces of about this long a transmission time
PIECE_SECONDS: Final = 0.02
MIN_PIECE: Final = 512


@dataclass(frozen=True)
class Violation:
    """One problem in a faults document: where (``delay``), and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message

    def to_json(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}


class FaultsError(ValueError):
    """Invalid faults, with every violation found."""

    def __init__(self, violations: list[Violation]) -> None:
        super().__init__("; ".join(map(str, violations)))
        self.violations = violations


@dataclass(frozen=True)
class Faults:
    """What the proxy does to the connections it relays.

    - ``delay``: seconds added to every byte, each way (a round trip takes 2 x delay more);
    - ``jitter``: each chunk's delay varies by up to this much either way (never reordering);
    - ``bandwidth``: bytes per second, per direction of each connection (None: no cap);
    - ``reset_after``: after this many bytes (both directions together) of a connection, reset
      both sides (RST);
    - ``stall``: accept and hold connections, forward nothing (until cleared);
    - ``refuse``: close new connections at once with a reset.
    """

    delay: float = 0.0
    jitter: float = 0.0
    bandwidth: int | None = None
    reset_after: int | None = None
    stall: bool = False
    refuse: bool = False

    def __post_init__(self) -> None:
        violations = _check(self)
        if violations:
            raise FaultsError(violations)

    @classmethod
    def from_json(cls, data: object) -> Faults:
        """Faults from a decoded JSON object (or its text); absent fields take their defaults.
        FaultsError lists every violation with its path."""
        if isinstance(data, str | bytes):
            try:
                data = json.loads(data)
            except ValueError as exc:
                raise FaultsError([Violation("", f"invalid JSON: {exc}")]) from None
        if not isinstance(data, Mapping):
            raise FaultsError([Violation("", "must be a JSON object")])
        known = {field.name for field in fields(cls)}
        violations = [Violation(str(key), "unknown field") for key in data if key not in known]
        values = {key: value for key, value in data.items() if key in known}
        violations += _check_values(values)
        if violations:
            raise FaultsError(violations)
        for name in ("delay", "jitter"):
            if name in values:
                values[name] = float(values[name])
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        return {field.name: getattr(self, field.name) for field in fields(self)}

    @property
    def shaping(self) -> bool:
        """Whether bytes are held at all (delay, jitter or a bandwidth cap)."""
        return self.delay > 0 or self.jitter > 0 or self.bandwidth is not None


def _check(faults: Faults) -> list[Violation]:
    return _check_values({field.name: getattr(faults, field.name) for field in fields(faults)})


def _check_values(values: Mapping[str, object]) -> list[Violation]:
    violations = []
    for name in ("delay", "jitter"):
        if name in values:
            value = values[name]
            if isinstance(value, bool) or not (
                isinstance(value, int | float) and math.isfinite(value) and 0 <= value <= MAX_DELAY
            ):
                violations.append(Violation(name, f"must be a number of seconds from 0 to {MAX_DELAY:g}"))
    for name, least in (("bandwidth", 1), ("reset_after", 0)):
        value = values.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < least):
            violations.append(Violation(name, f"must be an integer >= {least} (bytes), or null"))
    for name in ("stall", "refuse"):
        if name in values and not isinstance(values[name], bool):
            violations.append(Violation(name, "must be true or false"))
    return violations


# -- delivery timeline ------------------------------------------------------------------------


@dataclass(frozen=True)
class Lane:
    """The timeline of one direction of one connection.

    ``link_free``: when the bandwidth-limited link has sent everything accepted so far;
    ``last_delivery``: when the last piece scheduled is delivered (nothing may come before it).
    """

    link_free: float = 0.0
    last_delivery: float = 0.0


@dataclass(frozen=True)
class Piece:
    """Bytes ``start:end`` of a chunk, delivered at ``at``."""

    at: float
    start: int
    end: int


def piece_size(bandwidth: int) -> int:
    """How a bandwidth-limited chunk is cut: pieces of ``PIECE_SECONDS`` of transmission."""
    return max(MIN_PIECE, int(bandwidth * PIECE_SECONDS))


def jitter_offset(jitter: float, sample: float) -> float:
    """The delay variation for a uniform ``sample`` in [0, 1): from -jitter to +jitter."""
    return jitter * (2.0 * sample - 1.0)


def schedule(
    lane: Lane, now: float, size: int, faults: Faults, jitter: float = 0.0
) -> tuple[Lane, list[Piece]]:
    """When each piece of a ``size``-byte chunk read at ``now`` is delivered.

    A piece is delivered once the link has transmitted it (at ``bandwidth`` bytes per second,
    after what was accepted before it) plus ``delay + jitter`` (at least 0), and never before
    the previous piece. Without a bandwidth cap the chunk is one piece.
    """
    if size <= 0:
        return lane, []
    latency = max(0.0, faults.delay + jitter)
    last = lane.last_delivery
    if faults.bandwidth is None:
        at = max(now + latency, last)
        return Lane(lane.link_free, at), [Piece(at, 0, size)]
    step = piece_size(faults.bandwidth)
    sent = max(now, lane.link_free)
    pieces = []
    for start in range(0, size, step):
        end = min(size, start + step)
        sent += (end - start) / faults.bandwidth
        last = max(sent + latency, last)
        pieces.append(Piece(last, start, end))
    return Lane(sent, last), pieces


def eof_time(lane: Lane, now: float, faults: Faults) -> float:
    """When an end of stream read at ``now`` is delivered: after the delay, and after every
    piece before it."""
    return max(now + faults.delay, lane.last_delivery)
