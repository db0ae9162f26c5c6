"""Whether the edge can really serve a VIP now: the health that drives its announcement. No I/O.

A VIP is healthy when all three hold:

1. every public listener on it is accepting (bound, not failed: a port it cannot bind, an https
   port without a certificate, make it unhealthy);
2. the configuration is fresh: the zone CP link is up, or was lost less than ``staleness``
   seconds ago (the edge keeps serving from its persisted configuration meanwhile);
3. every global service on the VIP has a zone that can serve it: healthy instances, an ingress,
   not ejected, and reached by the last probe round (mTLS through the ingress to a local proxy).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from edge.choice import ZoneBook
from edge.proxy import PublicListener
from edge.runtime import GlobalService, ServingZone


@dataclass(frozen=True)
class Verdict:
    healthy: bool
    reason: str


def config_verdict(config_version: int, link_down_for: float | None, staleness: float) -> Verdict | None:
    """None when the configuration is usable; else why not."""
    if config_version == 0:
        return Verdict(False, "no configuration from the zone CP yet")
    if link_down_for is not None and link_down_for > staleness:
        return Verdict(
            False, f"configuration stale: no zone CP for {link_down_for:.0f}s (budget {staleness:.0f}s)"
        )
    return None


def serving_zone(service: GlobalService, ranked: Sequence[ServingZone], book: ZoneBook) -> str | None:
    """The first ranked zone the probes reached (None: no zone can serve the service now)."""
    for zone in ranked:
        health = book.zones.get((service.name, zone.zone))
        if health is not None and health.reachable and not health.ejected:
            return zone.zone
    return None


def vip_verdicts(
    services: Mapping[str, GlobalService],
    ranked: Mapping[str, Sequence[ServingZone]],
    listeners: Mapping[str, Sequence[PublicListener]],
    book: ZoneBook,
    config: Verdict | None,
) -> dict[str, Verdict]:
    verdicts: dict[str, Verdict] = {}
    for vip in sorted({v for s in services.values() for v in s.vips}):
        verdicts[vip] = _vip(vip, services, ranked, listeners.get(vip, ()), book, config)
    return verdicts


def _vip(
    vip: str,
    services: Mapping[str, GlobalService],
    ranked: Mapping[str, Sequence[ServingZone]],
    listeners: Sequence[PublicListener],
    book: ZoneBook,
    config: Verdict | None,
) -> Verdict:
    if config is not None:
        return config
    on_vip = [s for s in services.values() if vip in s.vips]
    wanted_ports = {p.port for s in on_vip for p in s.ports}
    if len(listeners) < len(wanted_ports):
        return Verdict(False, "not listening on every port yet")
    for entry in listeners:
        if entry.listener is None:
            return Verdict(False, f"port {entry.port}: {entry.error or 'not listening'}")
    for service in on_vip:
        if serving_zone(service, ranked.get(service.name, ()), book) is None:
            zones = ", ".join(f"{z.zone}: {z.healthy} healthy" for z in service.zones) or "no zone"
            return Verdict(False, f"no zone can serve {service.name} ({zones})")
    return Verdict(True, "serving")
