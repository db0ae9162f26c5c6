"""Upstream clusters: endpoints, load balancing, active counts and passive ejection.

``Cluster.pick()`` returns an endpoint chosen by the cluster's balancer among the endpoints not
ejected now; ``acquire``/``release`` (or ``with cluster.connection(endpoint):``) keep the active
connection counts the least-request balancer reads; ``report(endpoint, ok)`` feeds passive
ejection with the outcome of each connection attempt.

Passive ejection (``EjectionPolicy``; the defaults are for L4 connect failures, a strong signal):

- an endpoint is ejected after ``consecutive_failures`` (3) failed connection attempts in a row;
  any success resets the count;
- its ejection lasts ``base_ejection_time * 2 ** (level - 1)`` seconds, capped at
  ``max_ejection_time`` (30 s, 60 s, 120 s, 240 s, then 300 s), where ``level`` counts its recent
  ejections; every ``decay_after`` seconds (default: ``max_ejection_time``) it spends back in
  service forgive one level;
- when the ejection time is over the endpoint simply comes back, with its failure count reset;
- at most ``max_ejection_percent`` (50 %) of the endpoints are ejected at once, rounded down but
  at least one when the cluster has two or more endpoints, and never all of them: an endpoint
  that reaches the failure threshold while the budget is spent stays in (counted in
  ``ejections_suppressed``) and is ejected on its next failure once the budget allows. Passive
  ejection alone therefore never leaves a cluster without an endpoint to try.

Time comes from the injected ``clock`` (monotonic seconds), so tests fast-forward it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from meshgate.pki.spiffe import SpiffeId
from meshgate.proxy.balancer import Balancer, make_balancer
from meshgate.proxy.stats import ClusterStats

_EMPTY: Final[Mapping[str, str]] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An upstream address with its zone, weight and connection metadata.

    ``sni`` is the server name to send when connecting with TLS; ``identity`` the SPIFFE ID the
    server must present. ``metadata`` is free-form and not part of equality.
    """

    address: str
    port: int
    zone: str | None = None
    weight: int = 1
    sni: str | None = None
    identity: SpiffeId | None = None
    metadata: Mapping[str, str] = field(default_factory=lambda: _EMPTY, compare=False, hash=False)
    #: what identifies the endpoint within a cluster: (address, port), made once (the data path
    #: looks endpoints up by it on every request)
    key: tuple[str, int] = field(init=False, compare=False, repr=False)
    _hash: int = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.address:
            raise ValueError("endpoint address is empty")
        if not 0 < self.port < 65536:
            raise ValueError(f"endpoint port {self.port} is not in 1..65535")
        if self.weight < 1:
            raise ValueError(f"endpoint weight {self.weight} must be at least 1")
        object.__setattr__(self, "key", (self.address, self.port))
        fields = (self.address, self.port, self.zone, self.weight, self.sni, self.identity)
        object.__setattr__(self, "_hash", hash(fields))

    def __hash__(self) -> int:
        return self._hash

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class EjectionPolicy:
    consecutive_failures: int = 3
    base_ejection_time: float = 30.0
    max_ejection_time: float = 300.0
    max_ejection_percent: float = 50.0
    #: seconds back in service that forgive one ejection level (None: max_ejection_time)
    decay_after: float | None = None

    def __post_init__(self) -> None:
        if self.consecutive_failures < 1:
            raise ValueError("consecutive_failures must be at least 1")
        if not 0 < self.base_ejection_time <= self.max_ejection_time:
            raise ValueError("need 0 < base_ejection_time <= max_ejection_time")
        if not 0 <= self.max_ejection_percent <= 100:
            raise ValueError("max_ejection_percent must be within 0..100")
        if self.decay_after is not None and self.decay_after <= 0:
            raise ValueError("decay_after must be positive")

    def ejection_time(self, level: int) -> float:
        """How long the ``level``-th ejection in a row lasts (level >= 1)."""
        return min(self.base_ejection_time * 2.0 ** min(level - 1, 62), self.max_ejection_time)

    def max_ejected(self, endpoints: int) -> int:
        """How many of ``endpoints`` may be ejected at once."""
        if endpoints < 2 or self.max_ejection_percent <= 0:
            return 0
        allowed = max(int(endpoints * self.max_ejection_percent / 100), 1)
        return min(allowed, endpoints - 1)


class EndpointState:
    """What a cluster knows about one endpoint (a ``balancer.Candidate``)."""

    __slots__ = ("active", "ejected_until", "endpoint", "failures", "level", "returned_at")

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.active = 0
        self.failures = 0  # consecutive failed attempts
        self.ejected_until: float | None = None
        self.level = 0  # recent ejections (see EjectionPolicy)
        self.returned_at: float | None = None

    @property
    def weight(self) -> int:
        return self.endpoint.weight

    def __repr__(self) -> str:
        ejected = f" ejected until {self.ejected_until:.3f}" if self.ejected_until is not None else ""
        return f"<EndpointState {self.endpoint} active={self.active} failures={self.failures}{ejected}>"


class Cluster:
    def __init__(
        self,
        name: str,
        endpoints: Iterable[Endpoint] = (),
        *,
        balancer: str | Balancer = "round_robin",
        ejection: EjectionPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        stats: ClusterStats | None = None,
    ) -> None:
        self.name = name
        self.ejection = ejection if ejection is not None else EjectionPolicy()
        self.stats = stats if stats is not None else ClusterStats()
        self._clock = clock
        self._balancer = make_balancer(balancer, rng) if isinstance(balancer, str) else balancer
        self._states: dict[tuple[str, int], EndpointState] = {}
        self._leaving: dict[tuple[str, int], EndpointState] = {}  # removed, connections still open
        self._available: list[EndpointState] = []
        self._next_return: float | None = None  # earliest end of an ejection
        self.update(endpoints)

    # -- membership ------------------------------------------------------------------------------

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        return tuple(s.endpoint for s in self._states.values())

    def update(self, endpoints: Iterable[Endpoint]) -> None:
        """Replace the endpoints; an endpoint that stays (same address and port) keeps its active
        count, failures and ejection."""
        states: dict[tuple[str, int], EndpointState] = {}
        for endpoint in endpoints:
            if endpoint.key in states:
                raise ValueError(f"endpoint {endpoint} appears twice in cluster {self.name!r}")
            state = self._states.get(endpoint.key) or self._leaving.pop(endpoint.key, None)
            if state is None:
                state = EndpointState(endpoint)
            state.endpoint = endpoint
            states[endpoint.key] = state
        for key, state in self._states.items():
            if key not in states:
                if state.ejected_until is not None:
                    state.ejected_until = None
                    self.stats.ejected -= 1
                if state.active > 0:
                    self._leaving[key] = state
        self._states = states
        self._refresh()

    def _refresh(self, now: float | None = None) -> None:
        """Return endpoints whose ejection is over (as of ``now``) and rebuild the available list."""
        next_return: float | None = None
        available: list[EndpointState] = []
        for state in self._states.values():
            until = state.ejected_until
            if until is not None and now is not None and until <= now:
                state.ejected_until = None
                state.returned_at = until
                state.failures = 0
                self.stats.ejected -= 1
                until = None
            if until is None:
                available.append(state)
            elif next_return is None or until < next_return:
                next_return = until
        self._available = available
        self._next_return = next_return

    def _state(self, endpoint: Endpoint) -> EndpointState | None:
        return self._states.get(endpoint.key) or self._leaving.get(endpoint.key)

    # -- picking ---------------------------------------------------------------------------------

    def pick(self, exclude: Collection[Endpoint] = ()) -> Endpoint | None:
        """An endpoint to connect to (not ejected, not in ``exclude``), or None when there is none."""
        if self._next_return is not None:
            now = self._clock()
            if now >= self._next_return:
                self._refresh(now)
        candidates = self._available
        if exclude:
            keys = {e.key for e in exclude}
            candidates = [s for s in candidates if s.endpoint.key not in keys]
        chosen = self._balancer.pick(candidates)
        return None if chosen is None else chosen.endpoint

    def available(self) -> list[Endpoint]:
        """The endpoints ``pick`` chooses from now."""
        if self._next_return is not None and self._clock() >= self._next_return:
            self._refresh(self._clock())
        return [s.endpoint for s in self._available]

    def is_ejected(self, endpoint: Endpoint) -> bool:
        state = self._states.get(endpoint.key)
        if state is None or state.ejected_until is None:
            return False
        return self._clock() < state.ejected_until

    # -- active connections ----------------------------------------------------------------------

    def acquire(self, endpoint: Endpoint) -> None:
        """Count one more active connection to ``endpoint``."""
        state = self._state(endpoint)
        if state is not None:
            state.active += 1
            self.stats.active += 1

    def release(self, endpoint: Endpoint) -> None:
        """Count one active connection to ``endpoint`` less."""
        state = self._state(endpoint)
        if state is None or state.active <= 0:
            return
        state.active -= 1
        self.stats.active -= 1
        if state.active == 0 and self._leaving.get(endpoint.key) is state:
            del self._leaving[endpoint.key]

    @contextmanager
    def connection(self, endpoint: Endpoint) -> Iterator[Endpoint]:
        """``acquire`` for the duration of the block."""
        self.acquire(endpoint)
        try:
            yield endpoint
        finally:
            self.release(endpoint)

    def active(self, endpoint: Endpoint) -> int:
        state = self._state(endpoint)
        return 0 if state is None else state.active

    # -- passive ejection ------------------------------------------------------------------------

    def report(self, endpoint: Endpoint, ok: bool) -> None:
        """The outcome of a connection attempt to ``endpoint``."""
        state = self._states.get(endpoint.key)
        if state is None:
            return
        if ok:
            state.failures = 0
            return
        state.failures += 1
        now = self._clock()
        if state.ejected_until is not None:
            if now < state.ejected_until:
                return  # an attempt begun before the ejection
            self._refresh(now)
        if state.failures >= self.ejection.consecutive_failures:
            self._eject(state, now)

    def _eject(self, state: EndpointState, now: float) -> None:
        policy = self.ejection
        if self._next_return is not None and now >= self._next_return:
            self._refresh(now)
        ejected = len(self._states) - len(self._available)
        if ejected >= policy.max_ejected(len(self._states)):
            self.stats.ejections_suppressed += 1
            return
        if state.returned_at is not None:
            decay = policy.decay_after if policy.decay_after is not None else policy.max_ejection_time
            state.level = max(0, state.level - int((now - state.returned_at) // decay))
        state.level += 1
        state.ejected_until = now + policy.ejection_time(state.level)
        state.failures = 0
        self.stats.ejections += 1
        self.stats.ejected += 1
        self._refresh(now)

    def __repr__(self) -> str:
        return f"<Cluster {self.name!r} endpoints={len(self._states)} available={len(self._available)}>"
