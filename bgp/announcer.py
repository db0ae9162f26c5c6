"""Whether each VIP is announced: health hysteresis per VIP, and the drain sequence.

Pure: no I/O, no asyncio; every call takes ``now`` (seconds, on whatever clock the caller
uses, the same for every call). The edge controller feeds it one health sample per VIP per
check interval, calls ``step`` and makes the speaker match ``Plan.routes``.

Health: a VIP starts withdrawn; ``rise`` consecutive healthy samples announce it, ``fall``
consecutive unhealthy ones withdraw it.

Drain (``request_drain``)::

    keepalive-off  the first plan after the request: stop_keepalive, routes unchanged
    signalled      the next step: announced VIPs re-announced with the drain signals
    withdrawn      active connections <= drain_threshold, or drain_deadline seconds after
                   signalling: every VIP withdrawn, whatever its health

A VIP withdrawn during a drain stays withdrawn until the drain is cancelled; ``cancel_drain``
hands the decision back to health (VIPs that stayed healthy are announced at once).
Attributes never vary between edges except through the drain signals: the plan says only
whether a route is there and which signals it carries.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

DrainPhase = Literal["keepalive-off", "signalled", "withdrawn"]
VipState = Literal["announced", "draining", "withdrawn"]
SIGNALS = ("graceful-shutdown", "as-path-prepend")


@dataclass(frozen=True)
class Route:
    draining: bool = False
    graceful_shutdown: bool = False
    prepend: bool = False


NORMAL = Route()


@dataclass(frozen=True)
class DrainProgress:
    phase: DrainPhase
    started_at: float
    signals: tuple[str, ...]
    signalled_at: float | None = None
    withdrawn_at: float | None = None
    active_connections: int | None = None
    reason: str | None = None  # why the routes were withdrawn: "connections drained" or "deadline"


@dataclass(frozen=True)
class Plan:
    routes: dict[str, Route | None]  # per VIP: the route to announce, None for withdrawn
    stop_keepalive: bool
    drain: DrainProgress | None


@dataclass(frozen=True)
class VipView:
    vip: str
    state: VipState
    since: float
    reason: str


@dataclass
class _Vip:
    since: float
    up: bool = False  # what health alone decides
    healthy_run: int = 0
    unhealthy_run: int = 0
    samples: int = 0
    reason: str = ""
    state: VipState = "withdrawn"  # what the last plan (or change) made of it


class Announcer:
    def __init__(
        self, *, rise: int, fall: int, drain_threshold: int = 0, drain_deadline: float = 30.0
    ) -> None:
        if rise < 1 or fall < 1:
            raise ValueError("rise and fall must be at least 1")
        if drain_threshold < 0 or drain_deadline < 0:
            raise ValueError("drain_threshold and drain_deadline must not be negative")
        self._rise = rise
        self._fall = fall
        self._threshold = drain_threshold
        self._deadline = drain_deadline
        self._vips: dict[str, _Vip] = {}
        self._drain: DrainProgress | None = None
        self._keepalive_off_planned = False
        self._kept: set[str] = set()  # during a drain: the VIPs that may still be announced

    # -- inputs

    def set_vips(self, vips: Iterable[str], now: float) -> None:
        """New VIPs start withdrawn; VIPs no longer listed are forgotten (and so withdrawn)."""
        wanted = list(dict.fromkeys(vips))
        self._vips = {vip: self._vips.get(vip) or _Vip(since=now) for vip in wanted}
        self._kept &= set(wanted)

    def observe(self, vip: str, healthy: bool, reason: str, now: float) -> None:
        """One health sample; samples for a VIP that is not (or no longer) set are ignored."""
        state = self._vips.get(vip)
        if state is None:
            return
        state.samples += 1
        state.reason = reason
        if healthy:
            state.healthy_run += 1
            state.unhealthy_run = 0
            if not state.up and state.healthy_run >= self._rise:
                state.up = True
        else:
            state.unhealthy_run += 1
            state.healthy_run = 0
            if state.up and state.unhealthy_run >= self._fall:
                state.up = False
        if not state.up:
            self._kept.discard(vip)  # withdrawn during a drain: stays withdrawn
        self._commit(now)

    def request_drain(self, now: float, signals: Sequence[str]) -> None:
        """Start a drain; a drain already under way is left as it is."""
        unknown = [s for s in signals if s not in SIGNALS]
        if unknown:
            raise ValueError(f"unknown drain signal(s) {unknown}: expected some of {list(SIGNALS)}")
        if self._drain is not None:
            return
        self._drain = DrainProgress(
            phase="keepalive-off", started_at=now, signals=tuple(dict.fromkeys(signals))
        )
        self._keepalive_off_planned = False
        self._kept = {vip for vip, state in self._vips.items() if state.up}
        self._commit(now)

    def cancel_drain(self, now: float) -> None:
        self._drain = None
        self._kept = set()
        self._commit(now)

    # -- outputs

    def step(self, now: float, active_connections: int) -> Plan:
        drain = self._drain
        if drain is not None:
            drain = replace(drain, active_connections=active_connections)
            if drain.phase == "keepalive-off" and self._keepalive_off_planned:
                drain = replace(drain, phase="signalled", signalled_at=now)
            elif drain.phase == "signalled":
                signalled_at = drain.signalled_at
                assert signalled_at is not None
                if active_connections <= self._threshold:
                    drain = replace(drain, phase="withdrawn", withdrawn_at=now, reason="connections drained")
                elif now - signalled_at >= self._deadline:
                    drain = replace(drain, phase="withdrawn", withdrawn_at=now, reason="deadline")
            self._keepalive_off_planned = True
            self._drain = drain
        self._commit(now)
        routes = {vip: self._route(vip, state) for vip, state in self._vips.items()}
        return Plan(routes=routes, stop_keepalive=drain is not None, drain=drain)

    def view(self, now: float) -> list[VipView]:
        return [
            VipView(vip, state.state, state.since, self._reason(vip, state, now))
            for vip, state in self._vips.items()
        ]

    @property
    def drain(self) -> DrainProgress | None:
        return self._drain

    # -- internals

    def _route(self, vip: str, state: _Vip) -> Route | None:
        drain = self._drain
        if drain is None:
            return NORMAL if state.up else None
        if drain.phase == "withdrawn" or not state.up or vip not in self._kept:
            return None
        if drain.phase == "keepalive-off":
            return NORMAL
        return Route(
            draining=True,
            graceful_shutdown="graceful-shutdown" in drain.signals,
            prepend="as-path-prepend" in drain.signals,
        )

    def _commit(self, now: float) -> None:
        """Record each VIP's state as the plan now has it, and since when."""
        for vip, state in self._vips.items():
            route = self._route(vip, state)
            current: VipState = (
                "withdrawn" if route is None else "draining" if route.draining else "announced"
            )
            if current != state.state:
                state.state = current
                state.since = now

    def _reason(self, vip: str, state: _Vip, now: float) -> str:
        drain = self._drain
        if drain is not None and drain.phase == "withdrawn":
            return f"drained ({drain.reason})"
        if state.state == "draining" and drain is not None and drain.signalled_at is not None:
            left = max(0.0, drain.signalled_at + self._deadline - now)
            return (
                f"draining: {', '.join(drain.signals) or 'no signal'}; withdrawn at the latest in {left:.0f}s"
            )
        if drain is not None and state.up and vip not in self._kept:
            return "withdrawn during the drain"
        if state.samples == 0:
            return "no health check yet"
        if not state.up and state.healthy_run:
            return f"rising: {state.healthy_run}/{self._rise} healthy checks"
        if state.up and state.unhealthy_run:
            return f"failing: {state.unhealthy_run}/{self._fall} unhealthy checks: {state.reason}"
        return state.reason
