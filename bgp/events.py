"""ExaBGP 5 process-API output, one line at a time, as events (pure).

What 5.0.15 writes to its API process (captured against BIRD 2 and FRR 8; see
``tests/unit/bgp/fixtures/exabgp-5.0.15-api.txt``):

- acks, one per command: ``done`` / ``error`` (text even with ``encoder json``; the JSON form
  ``{ "answer": "done", ... }`` is read too), and ``shutdown``;
- ``"type": "state"`` with ``"state"`` ``connected`` (a connection attempt), ``up``
  (established) or ``down`` with a ``"reason"`` ("notification received (6,2)", "closing
  connection", "stop, message [shutting down]", ...);
- ``"type": "notification"`` with a ``"neighbor"``: a NOTIFICATION sent or received (code,
  subcode, message); without one (``"notification": "shutdown"``): ExaBGP is exiting.

Anything else (other messages, lines such as ``shutdown in progress``, garbage) gives None.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from typing import Any, Literal

AckKind = Literal["done", "error", "shutdown"]
NeighborState = Literal["connected", "up", "down"]


@dataclass(frozen=True)
class Ack:
    kind: AckKind


@dataclass(frozen=True)
class NeighborChange:
    peer: str
    local: str
    peer_asn: int
    local_asn: int
    state: NeighborState
    reason: str
    time: float


@dataclass(frozen=True)
class Notification:
    peer: str
    direction: Literal["send", "receive"]
    code: int
    subcode: int
    message: str
    time: float


@dataclass(frozen=True)
class SpeakerShutdown:
    time: float


Event = Ack | NeighborChange | Notification | SpeakerShutdown

_ACKS: dict[str, AckKind] = {"done": "done", "error": "error", "shutdown": "shutdown"}
_STATES: dict[str, NeighborState] = {"connected": "connected", "up": "up", "down": "down"}


def parse(line: str | bytes) -> Event | None:
    """The event on one line of ExaBGP's API output, or None for anything else."""
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError:
            return None
    text = line.strip()
    if text in _ACKS:
        return Ack(_ACKS[text])
    if not text.startswith("{"):
        return None
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    try:
        return _event(doc)
    except (KeyError, TypeError, ValueError):
        return None


def _event(doc: dict[str, Any]) -> Event | None:
    if "answer" in doc:
        kind = _ACKS.get(doc["answer"]) if isinstance(doc["answer"], str) else None
        return None if kind is None else Ack(kind)
    kind = doc.get("type")
    time = _number(doc["time"])
    if kind == "state":
        neighbor = doc["neighbor"]
        state = _STATES.get(_string(neighbor["state"]))
        if state is None:
            return None
        return NeighborChange(
            peer=_address(neighbor["address"]["peer"]),
            local=_local(neighbor["address"].get("local")),
            peer_asn=_int(neighbor["asn"]["peer"]),
            local_asn=_int(neighbor["asn"]["local"]),
            state=state,
            reason=_string(neighbor.get("reason", "")),
            time=time,
        )
    if kind == "notification":
        if doc.get("notification") == "shutdown" and "neighbor" not in doc:
            return SpeakerShutdown(time)
        neighbor = doc["neighbor"]
        body = neighbor["notification"]
        direction = neighbor["direction"]
        if direction not in ("send", "receive"):
            return None
        return Notification(
            peer=_address(neighbor["address"]["peer"]),
            direction=direction,
            code=_int(body["code"]),
            subcode=_int(body["subcode"]),
            message=_string(body.get("message", "")),
            time=time,
        )
    return None


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("not a string")
    return value


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("not an integer")
    return value


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("not a number")
    return float(value)


def _address(value: object) -> str:
    return str(ipaddress.ip_address(_string(value)))


def _local(value: object) -> str:
    """ExaBGP writes ``None`` for a session whose local address is not configured and not yet
    known."""
    if value is None or value == "None":
        return ""
    return _address(value)
