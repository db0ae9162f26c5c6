"""``meshgate proxy run``: one local proxy or zone ingress process (or N workers of it).

Start-up, in order: the identity from the data dir, or enrollment with the join token (retried
while the zone CP is unreachable); the last good configuration from the data dir; the TLS
identity; for a local proxy, a first round of health checks; the listeners; the link to the zone
CP (configuration stream, registration, renewals); the admin endpoint. Nothing after the
enrollment needs the zone CP: a proxy restarted while it is away serves from its data dir.

Updates apply in place: a new configuration replaces clusters and routes (endpoints that stay
keep their state); a renewed certificate swaps the TLS contexts (``TlsIdentity.update``) for new
handshakes while open connections keep theirs.

SIGTERM or SIGINT: ``/readyz`` turns 503, the listening sockets close (new connections are
refused), open connections get ``drain_timeout`` seconds to finish and are then aborted, and the
process exits 0.

``--workers N`` forks N processes after enrollment; each binds the listeners with SO_REUSEPORT
(the kernel spreads connections), runs its own health checks, configuration stream and
renewals; worker 0 alone registers the Dataplane and serves the admin endpoint, whose metrics are
therefore worker 0's. The parent forwards SIGTERM/SIGINT and exits with the worst child status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from meshgate import __version__
from meshgate.lifecycle import until_signal
from meshgate.proxy.identity import TlsIdentity
from meshgate.proxy.stats import Stats
from meshgate.proxy.tls_listener import TlsListener
from zones import config as proxy_config
from zones.admin import Admin
from zones.config import ConfigError, Instance, ProxyConfig
from zones.enroll import EnrollError, ZoneCP
from zones.health import HealthChecker
from zones.ingress import Ingress
from zones.link import Link
from zones.local import LocalProxy
from zones.runtime import Runtime, build
from zones.startup import identity_or_enroll, last_config
from zones.state import Identity, ProxyState

log = logging.getLogger(__name__)

DEFAULT_DRAIN_TIMEOUT: Final = 30.0
#: exit statuses (as the CLI's: 2 usage, 3 invalid input, 5 refused, 6 unavailable)
EXIT_OK, EXIT_ERROR, EXIT_INVALID, EXIT_AUTH = 0, 1, 3, 5


@dataclass(frozen=True)
class Options:
    role: str
    zone_cp: ZoneCP
    data_dir: Path
    config: ProxyConfig
    token_file: Path | None = None
    workers: int = 1
    cert_ttl: float | None = None
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT


def main(
    *, role: str, zone_cp_url: str, token_file: Path | None, data_dir: Path, config_file: Path | None,
    workers: int, cert_ttl: float | None, log_level: str, drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
) -> int:  # fmt: skip
    import uvloop

    from meshgate.telemetry import logs

    logs.configure(f"proxy-{role}", log_level)
    try:
        zone_cp = ZoneCP.parse(zone_cp_url)
        config = _load_config(role, config_file)
    except (ValueError, ConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    if workers < 1:
        print("error: --workers must be at least 1", file=sys.stderr)
        return EXIT_INVALID
    options = Options(role, zone_cp, data_dir, config, token_file, workers, cert_ttl, drain_timeout)
    try:
        identity = uvloop.run(_identity(options))
    except EnrollError as exc:
        log.error("enrollment refused: %s", exc)
        return EXIT_AUTH
    except (OSError, ValueError) as exc:
        log.error("cannot start: %s", exc)
        return EXIT_ERROR
    if workers == 1:
        return uvloop.run(Proxy(options, identity, worker=0).run())
    return _supervise(options, identity)


def _load_config(role: str, config_file: Path | None) -> ProxyConfig:
    if config_file is None:
        what = "its service, instances and listeners" if role == "local" else "its listener"
        raise ValueError(f"a {role} proxy needs --config ({what})")
    return proxy_config.load(config_file, role)


async def _identity(options: Options) -> Identity:
    token = options.token_file.read_text().strip() if options.token_file is not None else None
    return await identity_or_enroll(
        options.zone_cp, options.data_dir, token, role=options.role, service=options.config.service,
        name=options.config.name, ttl=options.cert_ttl,
    )  # fmt: skip


def _supervise(options: Options, identity: Identity) -> int:
    """Fork the workers, forward SIGTERM/SIGINT to them, return the worst exit status."""
    import uvloop

    children: list[int] = []
    for worker in range(options.workers):
        pid = os.fork()
        if pid == 0:  # the worker
            code = EXIT_ERROR
            try:
                code = uvloop.run(Proxy(options, identity, worker=worker).run())
            finally:
                os._exit(code)
        children.append(pid)

    def forward(signum: int, _: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    worst = 0
    for child in children:
        _, status = os.waitpid(child, 0)
        worst = max(worst, os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else EXIT_ERROR)
    return worst


class Proxy:
    """One serving process: its role's listeners, the link, health checks and admin."""

    def __init__(self, options: Options, identity: Identity, worker: int) -> None:
        self.options = options
        self.config = options.config
        self.worker = worker
        self.identity = identity
        self.state = ProxyState(options.data_dir)
        self.stats = Stats()
        self.tls = TlsIdentity(
            identity.chain_pem.encode(), identity.key_pem.encode(), "".join(identity.roots_pem).encode(),
            trust_domain=identity.trust_domain,
        )  # fmt: skip
        self.role: LocalProxy | Ingress = (
            LocalProxy(self.config, self.tls, self.stats, identity.zone)
            if options.role == "local"
            else Ingress(self.config, identity.zone, self.stats)
        )
        self.health: HealthChecker | None = None
        self.version = 0
        self.serving = False
        self.link: Link | None = None
        self.admin: Admin | None = None

    # -- running ---------------------------------------------------------------------------------

    async def run(self) -> int:
        version, documents = last_config(self.state, build, self.role.apply)
        self.version = version
        if isinstance(self.role, LocalProxy):
            self.health = HealthChecker(self.config.instances, self.config.health, self._health_changed)
            await self.health.start()
            check = self.config.health
            try:
                async with asyncio.timeout(check.timeout + 1.0):
                    await self.health.first_round.wait()
            except TimeoutError:
                log.warning("the first health checks did not finish in time")
            self.role.set_health(self.health.healthy())
        try:
            await self.role.start(reuse_port=self.options.workers > 1)
        except OSError as exc:
            log.error("cannot listen: %s", exc)
            await self._stop_background()
            return EXIT_ERROR
        self.serving = True
        log.info(
            "serving", extra={"role": self.options.role, "worker": self.worker, "config_version": version}
        )
        self.link = Link(
            self.options.zone_cp, self.state, self.identity, documents, version, self._config_changed,
            self._identity_changed, self.options.cert_ttl,
            self._registration if self.worker == 0 else (list),
        )  # fmt: skip
        await self.link.start()
        if self.worker == 0 and self.config.admin is not None:
            self.admin = Admin(self.stats, lambda: self.serving, self._gauges)
            await self.admin.start(*self.config.admin)
        await until_signal()
        return await self._drain()

    async def _drain(self) -> int:
        self.serving = False
        listeners = self.role.listeners
        for listener in listeners:
            listener.close()
        if isinstance(self.role, LocalProxy):
            self.role.drain()  # HTTP keep-alive ends: idle connections close, busy ones after a response
        open_now = sum(listener.open_connections for listener in listeners)
        log.info("draining", extra={"open_connections": open_now, "deadline": self.options.drain_timeout})
        aborted = await asyncio.gather(*(lst.wait_drained(self.options.drain_timeout) for lst in listeners))
        log.info("drained", extra={"aborted": sum(aborted)})
        if isinstance(self.role, LocalProxy):
            self.role.stop()
        await self._stop_background()
        return EXIT_OK

    async def _stop_background(self) -> None:
        if self.admin is not None:
            await self.admin.stop()
        if self.link is not None:
            await self.link.stop()
        if self.health is not None:
            await self.health.stop()

    # -- updates ---------------------------------------------------------------------------------

    def _config_changed(self, runtime: Runtime) -> None:
        self.role.apply(runtime)
        self.version = runtime.version
        log.info("configuration applied", extra={"version": runtime.version})

    def _identity_changed(self, identity: Identity) -> None:
        self.tls.update(
            identity.chain_pem.encode(), identity.key_pem.encode(), "".join(identity.roots_pem).encode()
        )
        self.identity = identity

    def _health_changed(self, healthy: dict[Instance, bool]) -> None:
        if isinstance(self.role, LocalProxy):
            self.role.set_health(healthy)
        if self.link is not None:
            self.link.registration_changed()

    # -- reports ---------------------------------------------------------------------------------

    def _registration(self) -> list[dict[str, Any]]:
        zone, config = self.identity.zone, self.config
        name = f"{zone}.{config.name}"
        if isinstance(self.role, LocalProxy):
            assert config.inbound is not None
            healthy = self.health.healthy() if self.health is not None else {}
            workloads = [
                {"service": config.service, "address": i.address, "port": i.port,
                 "health": "healthy" if healthy.get(i) else "unhealthy"}
                for i in config.instances
            ]  # fmt: skip
            spec = {"zone": zone, "role": "local", "address": config.inbound.advertised,
                    "port": self.role.inbound.port, "workloads": workloads, "version": __version__}  # fmt: skip
            return [_resource("Dataplane", name, spec)]
        assert config.listen is not None
        address, port = config.listen.advertised, self.role.listeners[0].port
        return [
            _resource("Dataplane", name, {"zone": zone, "role": "ingress", "address": address, "port": port,
                                          "version": __version__}),
            _resource("ZoneIngress", name, {"zone": zone, "address": address, "port": port}),
        ]  # fmt: skip

    def _gauges(self) -> dict[str, float]:
        for listener in self.role.listeners:
            if isinstance(listener, TlsListener):
                listener.count_handshake_failures()
        not_after = self.tls.certificate.not_valid_after_utc
        healthy = self.health.healthy() if self.health is not None else {}
        gauges = {
            "meshgate_proxy_config_version": float(self.version),
            "meshgate_proxy_certificate_expiry_seconds": (not_after - datetime.now(UTC)).total_seconds(),
            "meshgate_proxy_certificate_rotations": float(self.tls.generation),
            "meshgate_proxy_zone_cp_connected": float(self.link is not None and self.link.connected),
            "meshgate_proxy_serving": float(self.serving),
        }
        if self.health is not None:
            gauges["meshgate_proxy_healthy_instances"] = float(sum(healthy.values()))
        return gauges


def _resource(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "meshgate/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec}
