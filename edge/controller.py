"""The edge's control loop: health samples into the announcement state machine, its plan out to
the listeners (keep-alive) and to ExaBGP (routes).

Every ``announce.interval`` seconds: the listeners are reconciled with the configuration; each
VIP's health (``edge.health``) is one sample for ``bgp.announcer.Announcer`` (rise/fall
hysteresis); the drain the operator requested on the ``Edge`` (``meshgate edge drain``) is
started or cancelled; the announcer's plan is applied: keep-alive stopped on client connections
when a drain starts, then each VIP announced (with the drain signals while draining) or
withdrawn through the ``Speaker``. A probe round or a configuration change runs the loop at
once, so a zone failure reaches BGP within ``fall`` probe rounds.

What is reported (``EdgeStatus``, ``/status``, metrics) is what ExaBGP confirmed: a VIP counts as
announced only when ExaBGP acknowledged the route and a BGP session is established.

``bgp.speaker`` (the ExaBGP process, its configuration and API) is imported when a speaker is first
started: an edge with BGP disabled never loads it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bgp.announcer import Announcer, Plan
from bgp.commands import RouteAttributes, route_prefix
from bgp.settings import BgpSettings, settings_from_spec
from edge.config import EdgeConfig
from edge.health import Verdict, config_verdict, vip_verdicts
from edge.proxy import EdgeProxy
from meshgate.lifecycle import OwnedTask

if TYPE_CHECKING:
    from bgp.speaker import Speaker

log = logging.getLogger(__name__)

PREPEND = 3  # AS-path prepend while draining (with the as-path-prepend signal)


def prefix_of(vip: str) -> str:
    """The route of a VIP, normalised as the speaker keys what it announced."""
    return route_prefix(vip)


class Controller:
    def __init__(
        self, config: EdgeConfig, proxy: EdgeProxy, workdir: Path, *,
        config_age: Callable[[], float | None], config_version: Callable[[], int],
        on_status: Callable[[], None],
    ) -> None:  # fmt: skip
        self.config = config
        self.proxy = proxy
        self.workdir = workdir
        self.config_age = config_age
        self.config_version = config_version
        self.on_status = on_status
        self.announcer = Announcer(
            rise=config.announce.rise, fall=config.announce.fall,
            drain_threshold=config.drain.threshold, drain_deadline=config.drain.deadline,
        )  # fmt: skip
        self.speaker: Speaker | None = None
        self.settings: BgpSettings | None = None
        self.speaker_error = ""
        self.verdicts: dict[str, Verdict] = {}
        self.plan: Plan | None = None
        self.draining = False
        self.drain_signals: tuple[str, ...] = ()
        self._task = OwnedTask("edge-controller")
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self.steps = 0

    async def start(self) -> None:
        self._task.start(self._run())

    def kick(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        await self._task.stop()
        if self.speaker is not None:
            await self.speaker.stop()  # the BGP sessions close: every route goes with them

    async def _run(self) -> None:
        while True:
            try:
                await self.step()
            except Exception:  # the loop must survive a bug in one step (it owns the routes)
                log.exception("edge control step failed")
            self._wake.clear()
            try:
                async with asyncio.timeout(self.config.announce.interval):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def step(self) -> None:
        async with self._lock:
            await self._step()

    async def _step(self) -> None:
        proxy = self.proxy
        await proxy.reconcile()
        await self._speaker_for(proxy.runtime.edge)
        now = time.monotonic()
        config = config_verdict(self.config_version(), self.config_age(), self.config.announce.staleness)
        ranked = {name: route.ranked for name, route in proxy.routes.items()}
        self.verdicts = vip_verdicts(
            proxy.runtime.services, ranked, proxy.vip_listeners(), proxy.book, config
        )
        self.announcer.set_vips(self.verdicts, now)
        for vip, verdict in self.verdicts.items():
            self.announcer.observe(vip, verdict.healthy, verdict.reason, now)
        self._follow_drain_request(now)
        plan = self.announcer.step(now, proxy.open_connections)
        self.plan = plan
        if plan.stop_keepalive and not proxy.draining:
            proxy.drain()
            log.info("drain: keep-alive stopped on client connections")
        elif not plan.stop_keepalive and proxy.draining:
            proxy.undrain()
        await self._apply_routes(plan)
        self.steps += 1
        self.on_status()

    def _follow_drain_request(self, now: float) -> None:
        drain = self.proxy.runtime.drain
        if drain is not None and not self.draining:
            signals = tuple(drain.get("signals") or ("graceful-shutdown",))
            self.announcer.request_drain(now, signals)
            self.draining, self.drain_signals = True, signals
            log.info("drain requested", extra={"signals": list(signals), "reason": drain.get("reason", "")})
        elif drain is None and self.draining:
            self.announcer.cancel_drain(now)
            self.draining, self.drain_signals = False, ()
            log.info("drain cancelled")

    # -- BGP -------------------------------------------------------------------------------------

    async def _speaker_for(self, edge: dict[str, Any] | None) -> None:
        """Start, restart (new BGP settings) or stop ExaBGP to match the Edge resource."""
        settings = None
        if edge is not None and self.config.bgp.enabled:
            try:
                settings = settings_from_spec(edge.get("bgp", {}))
            except ValueError as exc:
                self.speaker_error = f"invalid BGP settings: {exc}"
        if settings == self.settings and (self.speaker is not None or settings is None):
            return
        if self.speaker is not None:
            await self.speaker.stop()
            self.speaker = None
        self.settings = settings
        if settings is None:
            return
        from bgp.speaker import ConfigInvalid, Speaker, SpeakerError

        speaker = Speaker(settings, self.workdir / "bgp", exabgp=self.config.bgp.exabgp, on_change=self.kick)
        try:
            await speaker.start()
        except (ConfigInvalid, SpeakerError, OSError) as exc:
            self.speaker_error = f"ExaBGP did not start: {exc}"
            log.error("%s", self.speaker_error)
            await speaker.stop()
            self.settings = None  # try again at the next step
            return
        self.speaker, self.speaker_error = speaker, ""
        log.info("BGP speaker started", extra={"neighbors": [n.address for n in settings.neighbors]})

    def attributes(self, draining: bool, graceful_shutdown: bool, prepend: bool) -> RouteAttributes:
        assert self.settings is not None
        return RouteAttributes(
            med=self.settings.med, communities=self.settings.communities,
            prepend=PREPEND if (draining and prepend) else 0, graceful_shutdown=draining and graceful_shutdown,
        )  # fmt: skip

    async def _apply_routes(self, plan: Plan) -> None:
        speaker = self.speaker
        if speaker is None or not speaker.running:
            return
        from bgp.speaker import SpeakerError

        wanted: dict[str, RouteAttributes] = {}
        for vip, route in plan.routes.items():
            if route is not None:
                wanted[prefix_of(vip)] = self.attributes(
                    route.draining, route.graceful_shutdown, route.prepend
                )
        try:
            for prefix in set(speaker.announced) - set(wanted):
                await speaker.withdraw(prefix)
                log.info("withdrawn", extra={"prefix": prefix})
            for prefix, attrs in wanted.items():
                if speaker.announced.get(prefix) != attrs:
                    await speaker.announce(prefix, attrs)
                    log.info("announced", extra={"prefix": prefix, "draining": attrs.graceful_shutdown})
        except SpeakerError as exc:
            self.speaker_error = str(exc)
            log.warning("BGP: %s", exc)

    # -- what is true now --------------------------------------------------------------------------

    def announced(self, vip: str) -> bool:
        """ExaBGP acknowledged the route and a session carries it."""
        speaker = self.speaker
        return (
            speaker is not None
            and speaker.running
            and prefix_of(vip) in speaker.announced
            and bool(speaker.neighbors.established())
        )
