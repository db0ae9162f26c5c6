"""Running a global CP: store, bootstrap, CA reconciler and API, started and stopped in order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
from typing import cast

from aiohttp import web

from global_cp import auth
from global_cp.api.app import build_app
from global_cp.api.state import AppState
from global_cp.bootstrap import bootstrap
from global_cp.config import GlobalCPConfig
from global_cp.mesh_ca import MeshCAReconciler
from global_cp.metrics import Metrics
from global_cp.service import ResourceService
from global_cp.tokens import TokenIssuer
from meshgate.clock import Clock, SystemClock
from meshgate.pki.kek import Kek
from meshgate.store.errors import Unavailable
from meshgate.store.interface import Store
from meshgate.store.urls import open_store

log = logging.getLogger(__name__)


class GlobalCP:
    """One global CP process. ``start`` returns once the API listens; ``ready`` follows."""

    def __init__(self, config: GlobalCPConfig, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.url = ""
        self._store: Store | None = None
        self._runner: web.AppRunner | None = None
        self._reconciler: MeshCAReconciler | None = None
        self._bootstrap_task: asyncio.Task[None] | None = None
        self._state: AppState | None = None

    async def start(self) -> None:
        config = self.config
        config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        kek = Kek.load_or_create(config.kek)
        self._store = store = await open_store(config.store)
        self._state = state = AppState(
            store=store,
            service=ResourceService(store),
            metrics=Metrics(),
            admin_hashes=set(),
            heartbeat=config.heartbeat,
        )
        app = build_app(state, max_body=config.max_body)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await self._runner.setup()
        host, port = config.host_port()
        site = web.TCPSite(self._runner, host, port, ssl_context=self._tls(), reuse_address=True)
        await site.start()
        self.url = _url(site, self._tls() is not None)
        if config.address_file is not None:
            auth.write_secret_file(config.address_file, self.url)
        log.info("listening", extra={"url": self.url, "store": _redact(config.store)})
        self._reconciler = MeshCAReconciler(store, kek, self.clock, root_ttl=config.root_ttl)
        self._bootstrap_task = asyncio.create_task(self._bootstrap(kek), name="bootstrap")

    @property
    def service(self) -> ResourceService:
        assert self._state is not None, "start() first"
        return self._state.service

    async def wait_ready(self) -> None:
        if self._bootstrap_task is not None:
            await self._bootstrap_task

    async def _bootstrap(self, kek: Kek) -> None:
        assert self._store is not None
        assert self._state is not None
        assert self._reconciler
        backoff = 0.2
        while True:
            try:
                done = await bootstrap(
                    self._store,
                    kek,
                    self.clock,
                    admin_token_file=self.config.admin_token,
                    trust_domain=self.config.trust_domain,
                    root_ttl=self.config.root_ttl,
                )
                break
            except Unavailable as exc:
                log.warning("store unavailable during bootstrap: %s; retrying", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        state = self._state
        state.admin_hashes.update(done.admin_hashes)
        state.issuer = TokenIssuer(self._store, done.token_key, done.token_key_id, self.clock)
        await self._reconciler.start()
        state.ready = True
        state.metrics.ready.set(1)
        if done.admin_token_written is not None:
            print(
                f"admin token written to {done.admin_token_written} (mode 0600); "
                f"the meshgate CLI reads it from there, or pass --token-file",
                flush=True,
            )
        log.info("ready", extra={"url": self.url})

    def _tls(self) -> ssl.SSLContext | None:
        if self.config.tls_cert is None:
            return None
        from meshgate.pki.tls import server_context

        assert self.config.tls_key is not None
        return server_context(self.config.tls_cert.read_bytes(), self.config.tls_key.read_bytes())

    async def stop(self) -> None:
        if self._bootstrap_task is not None:
            self._bootstrap_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._bootstrap_task
        if self._runner is not None:
            await self._runner.cleanup()
        if self._reconciler is not None:
            await self._reconciler.stop()
        if self._store is not None:
            await self._store.close()
        log.info("stopped")


async def run(config: GlobalCPConfig) -> None:
    """Serve until SIGTERM or SIGINT, then stop cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    cp = GlobalCP(config)
    await cp.start()
    try:
        await stop.wait()
    finally:
        await cp.stop()


def _url(site: web.TCPSite, tls: bool) -> str:
    server = cast(asyncio.Server | None, site._server)  # aiohttp keeps the bound socket here
    assert server is not None
    assert server.sockets
    host, port = server.sockets[0].getsockname()[:2]
    host = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{host}:{port}"


def _redact(url: str) -> str:
    return url.split("?", 1)[0]
