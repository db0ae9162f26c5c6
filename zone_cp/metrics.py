"""The zone CP's Prometheus metrics, in a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class ZoneMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.connected = Gauge(
            "meshgate_sync_connected",
            "1 while the stream to the global CP is up.",
            ["stream"],
            registry=self.registry,
        )
        self.updates = Counter(
            "meshgate_sync_updates",
            "Sync updates by stream and result (applied, nacked, acked).",
            ["stream", "result"],
            registry=self.registry,
        )
        self.applied_version = Gauge(
            "meshgate_sync_applied_version", "Last global version applied.", registry=self.registry
        )
        self.proxies = Gauge(
            "meshgate_proxies_connected", "Proxies with an open configuration stream.", registry=self.registry
        )
        self.certificates = Counter(
            "meshgate_proxy_certificates",
            "Proxy certificates issued, by kind (enroll, renew) and result.",
            ["kind", "result"],
            registry=self.registry,
        )
        self.registrations = Counter(
            "meshgate_dataplane_registrations",
            "Proxy registrations by result.",
            ["result"],
            registry=self.registry,
        )
