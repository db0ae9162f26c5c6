"""The demo mesh, running: a global CP and one zone CP per region, in this process.

Zones enroll with join tokens exactly as separate processes would (over TLS to the
zone-facing listener); a proxy in the first region registers a healthy instance, and the
other region learns it as a cross-zone endpoint.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from global_cp.api.zone_status import zone_statuses
from global_cp.config import GlobalCPConfig
from global_cp.server import GlobalCP
from global_cp.tokens import TokenRequest
from meshgate.demo.resources import ZONES, documents
from meshgate.files import write_secret_file
from zone_cp.config import ZoneCPConfig
from zone_cp.server import ZoneCP


@dataclass
class DemoMesh:
    root: Path
    listen: str
    cp: GlobalCP | None = None
    zones: dict[str, ZoneCP] = field(default_factory=dict)

    async def start(self) -> None:
        host = self.listen.rpartition(":")[0]
        zone_port = "0" if self.listen.endswith(":0") else "5685"
        self.cp = GlobalCP(
            GlobalCPConfig(
                data_dir=self.root / "global-cp", listen=self.listen, zone_listen=f"{host}:{zone_port}"
            )
        )
        await self.cp.start()
        await self.cp.wait_ready()
        await self.cp.service.apply(documents(self.cp.clock.now()))
        for zone in ZONES:
            token = await self.token("zone", zone)
            token_file = self.root / zone / "token"
            write_secret_file(token_file, token)
            zone_cp = ZoneCP(
                ZoneCPConfig(zone=zone, global_url=self.cp.zone_url, data_dir=self.root / zone,
                             token_file=token_file, listen=f"{host}:0", proxy_listen=f"{host}:0")
            )  # fmt: skip
            await zone_cp.start()
            await zone_cp.wait_joined()
            self.zones[zone] = zone_cp
        await until(self._all_connected, 20, "every zone connected")
        await self.register_instance(next(iter(ZONES)), "web")

    async def token(self, role: str, zone: str, *, reusable: bool = False) -> str:
        assert self.cp is not None
        request = TokenRequest(role=role, zone=zone, ttl="1h", reusable=reusable)  # type: ignore[arg-type]
        token, _ = await self.cp.issuer.issue(request)
        return token

    async def _all_connected(self) -> bool:
        assert self.cp is not None
        statuses = zone_statuses(self.cp.mirror, self.cp.clock.now())
        return all(statuses.get(z, {}).get("sync", {}).get("connected") for z in ZONES)

    async def register_instance(self, zone: str, service: str) -> None:
        """What a local proxy does when it starts: report its instance to its zone CP."""
        zone_cp = self.zones[zone]
        body = {
            "apiVersion": "meshgate/v1alpha1", "kind": "Dataplane", "metadata": {"name": f"{zone}.{service}-1"},
            "spec": {"zone": zone, "role": "local", "address": "127.0.0.1", "port": 10001,
                     "workloads": [{"service": service, "address": "127.0.0.1", "port": 8080, "health": "healthy"}]},
        }  # fmt: skip
        headers = {"Authorization": f"Bearer {await self.token('proxy', zone)}"}
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{zone_cp.url}/api/v1/dataplanes", data=json.dumps(body), headers=headers
            ) as response,
        ):
            response.raise_for_status()
        others = [z for z in self.zones if z != zone]
        await until(lambda: self._learned(others, service), 20, "the instance known in other zones")

    async def _learned(self, zones: list[str], service: str) -> bool:
        for zone in zones:
            store = self.zones[zone].store
            assert store is not None
            if not any(r.name == service for r in (await store.list("CrossZoneEndpoints")).items):
                return False
        return True

    async def stop(self) -> None:
        for zone_cp in self.zones.values():
            await zone_cp.stop()
        if self.cp is not None:
            await self.cp.stop()


async def until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"demo: timed out waiting for {what}")
        await asyncio.sleep(0.05)
