"""Running a global CP: store, bootstrap, reconcilers, the operator API and the zone-facing
listener, started in order and stopped in reverse."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
from typing import Protocol, cast

from aiohttp import web

from global_cp.api.app import build_app
from global_cp.api.state import AppState
from global_cp.bootstrap import bootstrap
from global_cp.config import GlobalCPConfig
from global_cp.mesh_ca import MeshCAReconciler
from global_cp.metrics import Metrics
from global_cp.service import ResourceService
from global_cp.tokens import TokenIssuer
from global_cp.zones.endpoints import CrossZoneReconciler
from global_cp.zones.hub import SyncHub
from global_cp.zones.listener import ZoneSide, build_zone_app
from global_cp.zones.trust import load_trust
from meshgate.clock import Clock, SystemClock
from meshgate.files import write_secret_file
from meshgate.lifecycle import until_signal
from meshgate.pki.identities import global_cp_id
from meshgate.pki.kek import Kek
from meshgate.pki.serving import ServingIdentity
from meshgate.store.errors import Unavailable
from meshgate.store.interface import Store
from meshgate.store.mirror import StoreMirror
from meshgate.store.urls import open_store

log = logging.getLogger(__name__)


class Component(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class GlobalCP:
    """One global CP process. ``start`` returns once the API listens; ``wait_ready`` waits for
    bootstrap (store reachable, CA and keys loaded) and the zone-facing listener."""

    def __init__(self, config: GlobalCPConfig, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.url = ""
        self.zone_url = ""
        self.hub: SyncHub | None = None
        self._store: Store | None = None
        self._runners: list[web.AppRunner] = []
        self._components: list[Component] = []
        self._bootstrap_task: asyncio.Task[None] | None = None
        self._state: AppState | None = None

    @property
    def service(self) -> ResourceService:
        assert self._state is not None, "start() first"
        return self._state.service

    @property
    def issuer(self) -> TokenIssuer:
        assert self._state is not None and self._state.issuer is not None, "wait_ready() first"
        return self._state.issuer

    @property
    def store(self) -> Store:
        assert self._store is not None, "start() first"
        return self._store

    async def start(self) -> None:
        config = self.config
        config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        kek = Kek.load_or_create(config.kek)
        self._store = store = await open_store(config.store)
        self.mirror = StoreMirror(store)
        self._state = state = AppState(
            store=store,
            mirror=self.mirror,
            service=ResourceService(store, self.mirror),
            metrics=Metrics(),
            admin_hashes=set(),
            heartbeat=config.heartbeat,
            clock=self.clock,
        )
        tls = self._api_tls()
        self.url = await self._serve(build_app(state, max_body=config.max_body), *config.host_port(), tls)
        if config.address_file is not None:
            write_secret_file(config.address_file, self.url)
        log.info("listening", extra={"url": self.url, "store": config.store.split("?", 1)[0]})
        self._bootstrap_task = asyncio.create_task(self._bootstrap(kek), name="bootstrap")

    async def wait_ready(self) -> None:
        if self._bootstrap_task is not None:
            await self._bootstrap_task

    async def _bootstrap(self, kek: Kek) -> None:
        store, state, config = self.store, self._state, self.config
        assert state is not None
        backoff = 0.2
        while True:
            try:
                done = await bootstrap(
                    store,
                    kek,
                    self.clock,
                    admin_token_file=config.admin_token,
                    trust_domain=config.trust_domain,
                    root_ttl=config.root_ttl,
                )
                trust = await load_trust(store, kek)
                break
            except Unavailable as exc:
                log.warning("store unavailable during bootstrap: %s; retrying", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        state.admin_hashes.update(done.admin_hashes)
        state.issuer = TokenIssuer(store, done.token_key, done.token_key_id, self.clock)
        host, port = config.zone_host_port()
        zone_tls = ServingIdentity(
            trust.ca, global_cp_id(trust.trust_domain), self.clock.now,
            [host, "localhost", "127.0.0.1", *config.zone_names],
        )  # fmt: skip
        replica = config.replica or f"{socket.gethostname()}:{os.getpid()}"
        self.hub = SyncHub(store, self.mirror, self.clock, state.metrics, replica)
        for component in (
            self.mirror,
            MeshCAReconciler(store, kek, self.clock, root_ttl=config.root_ttl),
            CrossZoneReconciler(store, self.mirror),
            zone_tls,
            self.hub,
        ):
            await component.start()
            self._components.append(component)
        side = ZoneSide(store, trust, self.clock, state.metrics, self.hub)
        self.zone_url = await self._serve(build_zone_app(side), host, port, zone_tls.context)
        if config.zone_address_file is not None:
            write_secret_file(config.zone_address_file, self.zone_url)
        state.ready = True
        state.metrics.ready.set(1)
        if done.admin_token_written is not None:
            print(
                f"admin token written to {done.admin_token_written} (mode 0600); "
                f"the meshgate CLI reads it from there, or pass --token-file",
                flush=True,
            )
        log.info("ready", extra={"url": self.url, "zone_url": self.zone_url})

    def _api_tls(self) -> ssl.SSLContext | None:
        if self.config.tls_cert is None:
            return None
        from meshgate.pki.tls import server_context

        assert self.config.tls_key is not None
        return server_context(self.config.tls_cert.read_bytes(), self.config.tls_key.read_bytes())

    async def _serve(self, app: web.Application, host: str, port: int, tls: ssl.SSLContext | None) -> str:
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, host, port, ssl_context=tls, reuse_address=True)
        await site.start()
        server = cast(asyncio.Server | None, site._server)  # aiohttp keeps the bound socket here
        assert server is not None
        assert server.sockets
        bound_host, bound_port = server.sockets[0].getsockname()[:2]
        bound_host = f"[{bound_host}]" if ":" in bound_host else bound_host
        return f"{'https' if tls else 'http'}://{bound_host}:{bound_port}"

    async def stop(self) -> None:
        if self._bootstrap_task is not None:
            self._bootstrap_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._bootstrap_task
        for component in reversed(self._components):  # the hub closes zone streams first
            await component.stop()
        for runner in reversed(self._runners):
            await runner.cleanup()
        if self._store is not None:
            await self._store.close()
        log.info("stopped")


async def run(config: GlobalCPConfig) -> None:
    """Serve until SIGTERM or SIGINT, then stop cleanly."""
    cp = GlobalCP(config)
    await cp.start()
    try:
        await until_signal()
    finally:
        await cp.stop()
