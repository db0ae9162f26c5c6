"""Running a zone CP: its own store first (so it serves its last good state at once), then
its identity (loaded, or enrolled with the join token), then the streams to the global CP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from typing import cast

from aiohttp import web

from global_cp.config import split_host_port
from meshgate.clock import Clock, SystemClock
from meshgate.files import write_secret_file
from meshgate.lifecycle import until_signal
from meshgate.pki.identities import zone_cp_id
from meshgate.pki.serving import ServingIdentity
from meshgate.store.interface import Limits
from meshgate.store.mirror import StoreMirror
from meshgate.store.sqlite import SqliteStore
from meshgate.stream_server import start_stream_server
from meshgate.sync.backoff import Backoff
from zone_cp.api import ZoneApi, build_api
from zone_cp.config import ZoneCPConfig
from zone_cp.enrollment import EnrollmentError, enroll
from zone_cp.identity import ZoneIdentity
from zone_cp.insight import InsightWriter
from zone_cp.link import GlobalLink, LinkState
from zone_cp.metrics import ZoneMetrics
from zone_cp.proxies.hub import ProxyHub
from zone_cp.proxies.server import ProxyServer

log = logging.getLogger(__name__)

# The zone's own store takes whole global updates in one transaction.
LOCAL_LIMITS = Limits(max_ops=1_000_000, max_bytes=1 << 30)


class FatalError(Exception):
    """The zone CP cannot go on (e.g. its join token was refused): exit non-zero."""


class ZoneCP:
    def __init__(self, config: ZoneCPConfig, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.url = ""
        self.link: GlobalLink | None = None
        self.store: SqliteStore | None = None
        self.mirror: StoreMirror | None = None
        self.failed = asyncio.Event()
        self.failure: str = ""
        self._runner: web.AppRunner | None = None
        self._join_task: asyncio.Task[None] | None = None
        self._insight: InsightWriter | None = None
        self._proxies: ProxyHub | None = None
        self._proxy_server: asyncio.Server | None = None
        self._serving: ServingIdentity | None = None
        self.proxy_url = ""
        self._api: ZoneApi | None = None

    async def start(self) -> None:
        config = self.config
        config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.store = await SqliteStore.open(config.store_path, limits=LOCAL_LIMITS, clock=self.clock)
        self._api = ZoneApi(config.zone, self.store, self.clock, ZoneMetrics())
        self._runner = web.AppRunner(
            build_api(self._api), access_log=None, handle_signals=False, shutdown_timeout=2.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, *split_host_port(config.listen, "--listen"), reuse_address=True)
        await site.start()
        server = cast(asyncio.Server | None, site._server)
        assert server is not None
        host, port = server.sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        if config.address_file is not None:
            write_secret_file(config.address_file, self.url)
        log.info("listening", extra={"url": self.url, "zone": config.zone})
        self._join_task = asyncio.create_task(self._join(), name="join")

    async def wait_joined(self) -> None:
        if self._join_task is not None:
            await self._join_task

    async def _join(self) -> None:
        assert self.store is not None
        assert self._api is not None
        identity = await self._identity()
        state = LinkState()
        self._insight = InsightWriter(self.store, self.config.zone, state, self.clock)
        self.mirror = StoreMirror(self.store)
        await self.mirror.start()
        self.link = GlobalLink(
            self.config,
            self.store,
            self.mirror,
            identity,
            self.clock,
            self._api.metrics,
            state,
            self._insight.kick,
        )
        self._api.on_registered = self._insight.kick
        await self.link.start()
        self._proxies = ProxyHub(self.config.zone, self.mirror, self.clock, self._api.metrics)
        await self._proxies.start()
        self._insight.proxies = lambda: self._proxies.connected if self._proxies else 0
        await self._insight.start()
        await self._serve_proxies(identity)
        self._api.link = self.link.state
        log.info("joined", extra={"zone": self.config.zone, "trust_domain": identity.trust_domain})

    async def _serve_proxies(self, identity: ZoneIdentity) -> None:
        assert self.store is not None
        assert self._api is not None
        assert self._proxies is not None
        assert self._insight is not None
        host, port = split_host_port(self.config.proxy_listen, "--proxy-listen")
        self._serving = ServingIdentity(
            identity.intermediate, zone_cp_id(identity.trust_domain, self.config.zone), self.clock.now,
            [host], ttl=timedelta(hours=24),
        )  # fmt: skip
        await self._serving.start()
        server = ProxyServer(
            self.store, identity, self._proxies, self.clock, self._api.metrics, self._insight.kick
        )
        # decrypting into one buffer: no 256 KiB bytes per acknowledgement read (mmap_threshold)
        self._proxy_server = await start_stream_server(server.handle, host, port, ssl=self._serving.context)
        bound = self._proxy_server.sockets[0].getsockname()
        self.proxy_url = f"tls://{bound[0]}:{bound[1]}"
        if self.config.proxy_address_file is not None:
            write_secret_file(self.config.proxy_address_file, self.proxy_url)
        log.info("serving proxies", extra={"url": self.proxy_url})

    async def _identity(self) -> ZoneIdentity:
        config = self.config
        identity = ZoneIdentity.load(config.pki_dir, config.zone, now=self.clock.now(), ttl=config.cert_ttl)
        if identity is not None:
            return identity
        if config.token_file is None:
            self._fail("not enrolled yet and no --token-file given")
        assert config.token_file is not None
        token = config.token_file.read_text().strip()
        backoff = Backoff(config.reconnect_initial, config.reconnect_max)
        while True:
            try:
                identity = await enroll(
                    config.global_url, config.zone, token, now=self.clock.now(), ttl=config.cert_ttl
                )
                break
            except EnrollmentError as exc:
                if not exc.retry:
                    self._fail(str(exc))
                log.warning("enrollment: %s; retrying", exc)
                await asyncio.sleep(backoff.next())
        identity.save(config.pki_dir)
        log.info("enrolled", extra={"zone": config.zone})
        return identity

    def _fail(self, message: str) -> None:
        self.failure = message
        self.failed.set()
        raise FatalError(message)

    async def stop(self) -> None:
        if self._join_task is not None:
            self._join_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, FatalError):
                await self._join_task
        if self._proxy_server is not None:
            self._proxy_server.close()
        if self._serving is not None:
            await self._serving.stop()
        if self._proxies is not None:
            await self._proxies.stop()
        if self._insight is not None:
            await self._insight.stop()
        if self.link is not None:
            await self.link.stop()
        if self.mirror is not None:
            await self.mirror.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        if self.store is not None:
            await self.store.close()


async def run(config: ZoneCPConfig) -> int:
    """Serve until SIGTERM or SIGINT (0), or until the zone CP cannot go on (1)."""
    cp = ZoneCP(config)
    await cp.start()
    try:
        await until_signal(cp.failed)
    finally:
        await cp.stop()
    if cp.failure:
        log.error("zone CP stopped: %s", cp.failure)
        return 1
    return 0
