"""CrossZoneEndpoints: where a service can be reached in other zones (derived, read-only).

The global CP computes it from the zones' Dataplanes (healthy instances) and ZoneIngresses
(their addresses) and sends it to every zone; a zone marks it stale while the global CP is away.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from meshgate.resources.fields import DnsLabel, IPAddress, Port
from meshgate.resources.model import Spec
from meshgate.resources.registry import Column, KindDescriptor, Owner, Scope, SyncDirection


class Ingress(Spec):
    address: IPAddress
    port: Port


class ZoneEndpoints(Spec):
    zone: DnsLabel
    healthy: int = Field(ge=0)
    ingresses: list[Ingress] = Field(default_factory=list)


class CrossZoneEndpointsSpec(Spec):
    service: DnsLabel
    zones: list[ZoneEndpoints] = Field(default_factory=list)


def _zones(doc: Mapping[str, Any]) -> str:
    zones = doc.get("spec", {}).get("zones", [])
    return ",".join(f"{z['zone']}:{z['healthy']}" for z in zones)


def _stale(doc: Mapping[str, Any]) -> str:
    sync = doc.get("status", {}).get("sync", {})
    return f"stale {sync.get('ageSeconds', '?')}s" if sync.get("stale") else ""


DESCRIPTOR = KindDescriptor(
    kind="CrossZoneEndpoints",
    plural="crosszoneendpoints",
    spec_type=CrossZoneEndpointsSpec,
    scope=Scope.GLOBAL,
    owner=Owner.DERIVED,
    sync=SyncDirection.GLOBAL_TO_ZONE,
    short_names=("xze",),
    dns_label_name=True,  # named after its service
    columns=(Column("ZONES (HEALTHY)", _zones), Column("SYNC", _stale)),
    description="Which zones have healthy instances of a service, and their ingresses (derived).",
)
