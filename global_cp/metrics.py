"""The global CP's Prometheus metrics, in a registry of its own (no process globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "meshgate_api_requests",
            "API requests by method, route and status code.",
            ["method", "route", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "meshgate_api_request_duration_seconds",
            "API request latency (watch streams excluded).",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.writes = Counter(
            "meshgate_resource_writes",
            "Resources written through the API, by kind and outcome.",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "meshgate_api_rejections",
            "Refused requests by reason (Invalid, Unauthorized, Conflict, StoreUnavailable...).",
            ["reason"],
            registry=self.registry,
        )
        self.watchers = Gauge("meshgate_api_watchers", "Open watch streams.", registry=self.registry)
        self.store_revision = Gauge(
            "meshgate_store_revision", "Store revision after the last write seen.", registry=self.registry
        )
        self.zone_refusals = Counter(
            "meshgate_zone_refusals",
            "Zones turned away, by reason (token, unknown or disabled zone, identity...).",
            ["reason"],
            registry=self.registry,
        )
        self.zones_connected = Gauge(
            "meshgate_sync_zones_connected",
            "Zones with an open sync stream, by stream.",
            ["stream"],
            registry=self.registry,
        )
        self.sync_updates = Counter(
            "meshgate_sync_updates",
            "Sync updates by stream and result (sent, acked, nacked, received).",
            ["stream", "result"],
            registry=self.registry,
        )
        self.resources_sent = Counter(
            "meshgate_sync_resources_sent",
            "Resources sent to zones (upserts and removals), by stream and zone.",
            ["stream", "zone"],
            registry=self.registry,
        )
        self.propagation = Histogram(
            "meshgate_sync_propagation_seconds",
            "From a change seen by the global CP to its acknowledgement by a zone.",
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.ready = Gauge(
            "meshgate_ready", "1 when the global CP is ready to serve.", registry=self.registry
        )
