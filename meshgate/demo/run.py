"""The demo mesh, running: every component a ``meshgate`` process started by the demo.

Start-up, in parallel where nothing waits on anything: the global CP (SQLite) and the workloads;
once the global CP answers, the resources are applied and join tokens made through its API; the
zone CPs enroll with theirs; then, at once, each zone's ingress, the local proxies in front of
the workloads and the edges. The demo is up when a request through every edge is answered by a
workload in the edge's own region. Every wait polls with a deadline.

Stop: edges first, then proxies, workloads, zone CPs and the global CP; SIGTERM each, SIGKILL
what is still running after ``STOP_TIMEOUT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from meshgate.demo.client import DemoClient, EdgeAnswer
from meshgate.demo.launcher import Component, StartFailed
from meshgate.demo.plan import Edge, Plan
from meshgate.demo.ports import PortPicker
from meshgate.demo.resources import ZONES, documents, public_tls
from meshgate.files import write_secret_file

START_TIMEOUT = 90.0  # seconds, for everything (a busy machine is slow, a broken one never ends)
STOP_TIMEOUT = 10.0
STOP_ORDER = ("edge", "proxy", "workload", "zone-cp", "global-cp")
TOKEN_ROLES = ("zone", "ingress", "proxy", "edge")


class DemoError(Exception):
    """Start-up went wrong outside any one process (the API refused what the demo sent)."""


@dataclass(frozen=True)
class ZoneUrls:
    api: str
    proxy: str  # where proxies and edges enroll and get configuration


async def all_of(*work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` at once; the first failure cancels the rest and is raised as itself."""
    try:
        async with asyncio.TaskGroup() as group:
            for item in work:
                group.create_task(item)
    except ExceptionGroup as failures:
        raise failures.exceptions[0] from None


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:  # not there yet (or never: the process will say why, and exit)
        return ""


def _forget(directory: Path, *names: str) -> None:
    """Remove the address files a process writes once listening (a run before left them)."""
    for name in names:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):  # (the process will say)
            (directory / name).unlink()


class DemoMesh:
    def __init__(self, root: Path, progress: Callable[[str], None], picker: PortPicker | None = None) -> None:
        self.plan = Plan.make(root, picker or PortPicker())
        self.progress = progress
        self.client = DemoClient()
        self.components: list[Component] = []
        self.edge_components: dict[str, Component] = {}
        self.global_url = ""
        self.zone_urls: dict[str, ZoneUrls] = {}
        self.admin_token = ""
        self.answers: dict[str, EdgeAnswer] = {}  # by edge name: the last request through it
        self._started = time.monotonic()

    def _add(self, name: str, tier: str, args: list[str], log: str) -> Component:
        component = Component(name, tier, args, self.plan.logs / log)
        self.components.append(component)
        return component

    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def _step(self, what: str) -> None:
        self.progress(f"  {self.elapsed():5.1f} s  {what}")

    # -- start -------------------------------------------------------------------------------------

    async def start(self, timeout: float = START_TIMEOUT) -> None:
        self._started = time.monotonic()
        deadline = self._started + timeout
        plan = self.plan
        plan.root.mkdir(parents=True, exist_ok=True, mode=0o700)  # stores hold TLS keys
        global_cp = self._add("global CP", "global-cp", plan.global_cp(), "global-cp.log")
        workloads = [
            self._add(f"workload {p.workload}", "workload", plan.workload(p), f"workload-{p.workload}.log")
            for p in plan.proxies
        ]
        _forget(plan.global_dir, "address", "zone-address")  # a --data-dir used before has them
        for component in (global_cp, *workloads):
            await component.spawn()
        tls = public_tls(datetime.now(UTC))
        plan.ca_file.write_text(tls.ca_pem)
        self.client.trust(plan.ca_file)
        zone_url = await self._global_ready(global_cp, deadline)
        self._step(f"global CP ready at {self.global_url} (SQLite store)")
        await self._api("POST", "/api/v1/apply", {"kind": "List", "items": documents(datetime.now(UTC), tls)})
        tokens = await self._tokens()
        zone_cps = {}
        for zone in ZONES:
            token_file = self._token_file(plan.zone_dir(zone, "cp"), tokens[("zone", zone)])
            _forget(plan.zone_dir(zone, "cp"), "address", "proxy-address")
            zone_cps[zone] = self._add(
                f"zone CP {zone}", "zone-cp", plan.zone_cp(zone, zone_url, token_file), f"zone-cp-{zone}.log"
            )
            await zone_cps[zone].spawn()
        await all_of(*(self._zone_ready(zone, c, deadline) for zone, c in zone_cps.items()))
        self._step(f"resources applied; zone CPs {', '.join(ZONES)} enrolled")
        host = plan.host
        answering = [  # (process, a URL that answers 200 once it is ready)
            (w, f"http://{host}:{p.workload_port}/_meshgate/healthz")
            for w, p in zip(workloads, plan.proxies, strict=True)
        ]
        for ingress in plan.ingresses:
            d = plan.zone_dir(ingress.zone, "ingress")
            c = await self._proxy(
                f"ingress {ingress.zone}", "ingress", d, plan.ingress_config(ingress), ingress.zone, tokens
            )
            answering.append((c, f"http://{host}:{ingress.admin_port}/readyz"))
        for proxy in plan.proxies:
            d = plan.zone_dir(proxy.zone, proxy.name)
            name = f"proxy {proxy.name} ({proxy.zone})"
            c = await self._proxy(name, "local", d, plan.local_proxy_config(proxy), proxy.zone, tokens)
            answering.append((c, f"http://{host}:{proxy.admin_port}/readyz"))
        for edge in plan.edges:
            c = await self._edge(edge, tokens)
            answering.append((c, f"http://{host}:{edge.admin_port}/readyz"))
        await all_of(*(self._answering(c, url, deadline) for c, url in answering))
        self._step("workloads, local proxies, ingresses and edges running")
        await all_of(*(self._served(edge, deadline) for edge in plan.edges))
        self._step("every edge answered, over http and https, from a workload in its own region")

    async def _global_ready(self, component: Component, deadline: float) -> str:
        d = self.plan.global_dir

        async def ready() -> bool:
            self.global_url = _read(d / "address")
            zone_url = _read(d / "zone-address")
            return bool(self.global_url and zone_url) and await self.client.ok(f"{self.global_url}/readyz")

        await component.wait_until(ready, deadline, "ready")
        self.admin_token = _read(self.plan.admin_token)
        if not self.admin_token:
            raise DemoError(f"the global CP wrote no admin token to {self.plan.admin_token}")
        return _read(d / "zone-address")

    async def _api(self, method: str, path: str, body: Any) -> Any:
        try:
            status, answer = await self.client.call(method, self.global_url + path, self.admin_token, body)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            raise DemoError(
                f"{method} {path}: no answer from the global CP ({exc or type(exc).__name__})"
            ) from None
        if status not in (200, 201):
            raise DemoError(f"{method} {path}: {status} {json.dumps(answer)[:2000]}")
        return answer

    async def _tokens(self) -> dict[tuple[str, str], str]:
        wanted = [(role, zone) for zone in ZONES for role in TOKEN_ROLES]
        answers = await asyncio.gather(*(
            self._api("POST", "/api/v1/tokens",
                      {"role": role, "zone": zone, "ttl": "1h", "reusable": role == "proxy"})
            for role, zone in wanted
        ))  # fmt: skip
        return {key: str(answer["token"]) for key, answer in zip(wanted, answers, strict=True)}

    @staticmethod
    def _token_file(directory: Path, token: str) -> Path:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = directory / "token"
        write_secret_file(path, token)
        return path

    async def _zone_ready(self, zone: str, component: Component, deadline: float) -> None:
        d = self.plan.zone_dir(zone, "cp")

        async def ready() -> bool:
            api, proxy = _read(d / "address"), _read(d / "proxy-address")
            if api and proxy and await self.client.ok(f"{api}/readyz"):
                self.zone_urls[zone] = ZoneUrls(api, proxy)
                return True
            return False

        await component.wait_until(ready, deadline, "enrolled")

    async def _answering(self, component: Component, url: str, deadline: float) -> None:
        await component.wait_until(lambda: self.client.ok(url), deadline, "ready")

    async def _proxy(
        self, name: str, role: str, data_dir: Path, config: dict[str, Any], zone: str,
        tokens: dict[tuple[str, str], str],
    ) -> Component:  # fmt: skip
        token_file = self._token_file(data_dir, tokens[("ingress" if role == "ingress" else "proxy", zone)])
        (data_dir / "proxy.json").write_text(json.dumps(config, indent=2))
        args = self.plan.proxy(role, data_dir, self.zone_urls[zone].proxy, token_file)
        log = f"{role}-{zone}-{config['name']}.log" if role == "local" else f"ingress-{zone}.log"
        component = self._add(name, "proxy", args, log)
        await component.spawn()
        return component

    async def _edge(self, edge: Edge, tokens: dict[tuple[str, str], str]) -> Component:
        d = self.plan.edge_dir(edge)
        token_file = self._token_file(d, tokens[("edge", edge.zone)])
        (d / "edge.json").write_text(json.dumps(self.plan.edge_config(edge), indent=2))
        args = self.plan.edge(edge, self.zone_urls[edge.zone].proxy, token_file)
        component = self._add(f"edge {edge.name} ({edge.zone})", "edge", args, f"{edge.name}.log")
        self.edge_components[edge.name] = component
        await component.spawn()
        return component

    def urls(self, edge: Edge) -> tuple[str, str]:
        """The edge's http and https URLs as a client sends them (connect to the loopback port)."""
        host = self.plan.host
        return f"http://{host}:{edge.http_port}/", f"https://{host}:{edge.https_port}/"

    async def _served(self, edge: Edge, deadline: float) -> None:
        """Both URLs answered 200 by a workload, through the edge's own zone."""
        component = self.edge_components[edge.name]

        async def served() -> bool:
            answers = [await self.client.through_edge(url) for url in self.urls(edge)]
            self.answers[edge.name] = answers[0]
            return all(a.served and a.zone == edge.zone for a in answers)

        try:
            await component.wait_until(served, deadline, "serving from its own region")
        except StartFailed as failed:
            last = self.answers.get(edge.name)
            if last is not None:
                seen = (
                    last.error
                    or f"{last.status} from zone {last.zone or '-'} ({last.workload or 'no workload'})"
                )
                raise StartFailed(component, f"{failed.reason} (last answer: {seen})") from None
            raise

    # -- stop --------------------------------------------------------------------------------------

    async def stop(self) -> list[str]:
        """Stop every process, tier by tier; what happened to those that did not stop cleanly."""
        await self.client.close()
        trouble = []
        for tier in STOP_ORDER:
            members = [c for c in self.components if c.tier == tier]
            outcomes = await asyncio.gather(*(c.stop(STOP_TIMEOUT) for c in members))
            trouble += [
                f"{c.name}: {o}"
                for c, o in zip(members, outcomes, strict=True)
                if o not in ("stopped", "never started")
            ]
        return trouble
