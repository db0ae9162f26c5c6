"""``meshgate edge run``: one edge node.

Start-up, in order: the identity from the data dir, or enrollment with the join token (role
``edge``, retried while the zone CP is unreachable); the last good configuration from the data
dir; the TLS identity; the public listeners; the probes to the zones' ingresses; the link to the
zone CP (configuration stream, ``EdgeStatus`` registration, renewals); the control loop, which
starts ExaBGP once the ``Edge`` resource gives its BGP settings; the admin endpoint
(``/healthz``, ``/readyz``, ``/metrics``, ``/status``). A restart while the zone CP is away serves
from the data dir, and keeps announcing for ``announce.staleness`` seconds.

Process tree (see ``bgp/README.md``)::

    meshgate edge run                 the controller: listeners, probes, control loop
    └── exabgp server <conf>          parent-death signal SIGTERM: dies with the controller
        └── python -I -S bgp/helper.py   ExaBGP's API process, a pipe to the controller's
                                         unix socket; exits when either side closes

SIGTERM or SIGINT: keep-alive ends on client connections, ExaBGP stops (its sessions close, so
every route is withdrawn at once), the listeners close, open connections get ``drain.deadline``
seconds, then the process exits 0. An orderly drain without loss is ``meshgate edge drain``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from edge import config as edge_config
from edge.config import EdgeConfig
from edge.controller import Controller
from edge.prober import Prober
from edge.proxy import EdgeProxy
from edge.runtime import EdgeRuntime, build
from edge.status import edge_status, gauges, metric_lines, worth_reporting
from meshgate.lifecycle import until_signal
from meshgate.proxy.identity import TlsIdentity
from meshgate.proxy.stats import Stats
from zones.admin import Admin
from zones.config import ConfigError
from zones.enroll import EnrollError, ZoneCP
from zones.link import Link
from zones.startup import identity_or_enroll, last_config
from zones.state import Identity, ProxyState

log = logging.getLogger(__name__)

EXIT_OK, EXIT_ERROR, EXIT_INVALID, EXIT_AUTH = 0, 1, 3, 5
STATUS_REFRESH: Final = 30.0  # seconds: EdgeStatus is re-registered at least this often


def main(
    *, zone_cp_url: str, token_file: Path | None, data_dir: Path, config_file: Path | None,
    cert_ttl: float | None = None, log_level: str = "info",
) -> int:  # fmt: skip
    import uvloop

    from meshgate.telemetry import logs

    logs.configure("edge", log_level)
    try:
        zone_cp = ZoneCP.parse(zone_cp_url)
        config = (
            edge_config.load(config_file)
            if config_file is not None
            else edge_config.parse({"name": socket.gethostname().split(".")[0].lower()})
        )
    except (ValueError, ConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    try:
        token = token_file.read_text().strip() if token_file is not None else None
        identity = uvloop.run(
            identity_or_enroll(
                zone_cp, data_dir, token, role="edge", service="", name=config.name, ttl=cert_ttl
            )
        )
    except EnrollError as exc:
        log.error("enrollment refused: %s", exc)
        return EXIT_AUTH
    except (OSError, ValueError) as exc:
        log.error("cannot start: %s", exc)
        return EXIT_ERROR
    return uvloop.run(Edge(config, zone_cp, data_dir, identity, cert_ttl).run())


class Edge:
    def __init__(
        self, config: EdgeConfig, zone_cp: ZoneCP, data_dir: Path, identity: Identity, cert_ttl: float | None
    ) -> None:
        self.config = config
        self.zone_cp = zone_cp
        self.data_dir = data_dir
        self.identity = identity
        self.cert_ttl = cert_ttl
        self.state = ProxyState(data_dir)
        self.stats = Stats()
        self.tls = TlsIdentity(
            identity.chain_pem.encode(), identity.key_pem.encode(), "".join(identity.roots_pem).encode(),
            trust_domain=identity.trust_domain,
        )  # fmt: skip
        self.proxy = EdgeProxy(config, self.tls, self.stats, identity.zone)
        self.prober = Prober(
            self.tls, self.proxy.book, interval=config.probe.interval, timeout=config.probe.timeout,
            on_round=self._probed,
        )  # fmt: skip
        self.controller = Controller(
            config, self.proxy, data_dir, config_age=self._config_age, config_version=lambda: self.version,
            on_status=self._status_changed,
        )  # fmt: skip
        self.version = 0
        self.link: Link | None = None
        self.admin: Admin | None = None
        self.serving = False
        self._started = time.monotonic()
        self._link_seen = time.monotonic()
        self._last_status: dict[str, Any] | None = None
        self._status_sent_at = 0.0

    async def run(self) -> int:
        version, documents = last_config(self.state, build, self._apply)
        self.link = Link(
            self.zone_cp, self.state, self.identity, documents, version, self._config_changed,
            self._identity_changed, self.cert_ttl, self._registration, builder=build,
        )  # fmt: skip
        await self.proxy.reconcile()
        await self.prober.start()
        await self.link.start()
        await self.controller.start()
        self.serving = True
        log.info("edge running", extra={"edge": self.config.name, "config_version": version})
        if self.config.admin is not None:
            self.admin = Admin(
                self.stats, lambda: self.serving, self._gauges, extra_metrics=lambda: metric_lines(self.controller),
                status=self._status_doc,
            )  # fmt: skip
            await self.admin.start(*self.config.admin)
        await until_signal()
        return await self._stop()

    async def _stop(self) -> int:
        self.serving = False
        self.proxy.drain()
        await self.controller.stop()  # ExaBGP stops: its sessions close and the routes go
        listeners = self.proxy.close_listeners()
        open_now = sum(listener.open_connections for listener in listeners)
        log.info("stopping", extra={"open_connections": open_now, "deadline": self.config.drain.deadline})
        aborted = await asyncio.gather(*(lst.wait_drained(self.config.drain.deadline) for lst in listeners))
        log.info("stopped", extra={"aborted": sum(aborted)})
        self.proxy.stop()
        await self.prober.stop()
        if self.admin is not None:
            await self.admin.stop()
        if self.link is not None:
            await self.link.stop()
        return EXIT_OK

    # -- updates ---------------------------------------------------------------------------------

    def _apply(self, runtime: EdgeRuntime) -> None:
        self.proxy.apply(runtime)
        self.prober.set_targets(self.proxy.targets())
        self.version = runtime.version

    def _config_changed(self, runtime: EdgeRuntime) -> None:
        self._apply(runtime)
        log.info("configuration applied", extra={"version": runtime.version})
        self.controller.kick()

    def _identity_changed(self, identity: Identity) -> None:
        self.tls.update(
            identity.chain_pem.encode(), identity.key_pem.encode(), "".join(identity.roots_pem).encode()
        )
        self.identity = identity

    def _probed(self) -> None:
        self.proxy.rerank()
        self.controller.kick()

    def _config_age(self) -> float | None:
        """Seconds since the zone CP link was last up (None: it is up)."""
        now = time.monotonic()
        if self.link is not None and self.link.connected:
            self._link_seen = now
            return None
        return now - self._link_seen

    # -- reports ---------------------------------------------------------------------------------

    def _status_doc(self) -> dict[str, Any]:
        return edge_status(self.controller, self.identity.zone, time.monotonic(), self._config_age())

    def _status_changed(self) -> None:
        spec = self._status_doc()
        comparable = {k: v for k, v in spec.items() if k not in ("updatedAt", "configAgeSeconds")}
        for session in comparable.get("sessions", []):
            session.pop("since", None)
        now = time.monotonic()
        if worth_reporting(self._last_status, comparable) or now - self._status_sent_at > STATUS_REFRESH:
            self._last_status = comparable
            self._status_sent_at = now
            if self.link is not None:
                self.link.registration_changed()

    def _registration(self) -> list[dict[str, Any]]:
        spec = self._status_doc()
        return [{"apiVersion": "meshgate/v1alpha1", "kind": "EdgeStatus",
                 "metadata": {"name": self.config.name}, "spec": spec}]  # fmt: skip

    def _gauges(self) -> dict[str, float]:
        not_after = self.tls.certificate.not_valid_after_utc
        values = {
            "meshgate_edge_config_version": float(self.version),
            "meshgate_edge_certificate_expiry_seconds": (not_after - datetime.now(UTC)).total_seconds(),
            "meshgate_edge_zone_cp_connected": float(self.link is not None and self.link.connected),
            "meshgate_edge_serving": float(self.serving),
        }
        values.update(gauges(self.controller))
        return values
