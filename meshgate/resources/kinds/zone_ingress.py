"""ZoneIngress: the address other zones use to reach this zone's services."""

from __future__ import annotations

from collections.abc import Iterable

from meshgate.resources.fields import DnsLabel, IPAddress, Port
from meshgate.resources.kinds._columns import spec_field
from meshgate.resources.kinds._zone_names import named_in_zone
from meshgate.resources.model import Spec
from meshgate.resources.registry import (
    Column,
    KindDescriptor,
    Owner,
    Reference,
    Scope,
    SyncDirection,
)


class ZoneIngressSpec(Spec):
    zone: DnsLabel
    address: IPAddress  # advertised: reachable from other zones
    port: Port


def _references(spec: ZoneIngressSpec) -> Iterable[Reference]:
    yield Reference("Zone", spec.zone, ("zone",))


DESCRIPTOR = KindDescriptor(
    kind="ZoneIngress",
    plural="zoneingresses",
    spec_type=ZoneIngressSpec,
    scope=Scope.ZONE,
    owner=Owner.ZONE,
    sync=SyncDirection.ZONE_TO_GLOBAL,
    short_names=("zi", "zoneingress"),
    references=_references,
    checks=named_in_zone,  # <zone>.<name>; <name> appears in spiffe://<td>/zone/<zone>/ingress/<name>
    columns=(
        Column("ZONE", spec_field("zone")),
        Column("ADDRESS", spec_field("address")),
        Column("PORT", spec_field("port")),
    ),
    description="A zone ingress and its advertised address (written by its zone CP).",
)
