"""ZoneInsight: what a zone has applied, what it rejected, and who is connected to it."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from pydantic import Field

from meshgate.resources.fields import DnsLabel, Text, Timestamp
from meshgate.resources.kinds._columns import spec_field
from meshgate.resources.model import PathMessage, Resource, Spec
from meshgate.resources.registry import (
    Column,
    KindDescriptor,
    Owner,
    Reference,
    Scope,
    SyncDirection,
)


class Nack(Spec):
    version: int = Field(ge=0)
    error: Text
    at: Timestamp


class ZoneInsightSpec(Spec):
    zone: DnsLabel
    applied_version: int = Field(0, ge=0)  # last global version the zone applied
    last_nack: Nack | None = None
    connected_proxies: int = Field(0, ge=0)
    cp_version: Text = ""  # meshgate version of the zone CP
    updated_at: Timestamp | None = None


def _references(spec: ZoneInsightSpec) -> Iterable[Reference]:
    yield Reference("Zone", spec.zone, ("zone",))


def _named_after_zone(resource: Resource) -> Iterator[PathMessage]:
    zone = resource.spec_as(ZoneInsightSpec).zone
    if resource.name != zone:
        yield ("metadata", "name"), f"a ZoneInsight is named after its zone: {zone!r}"


DESCRIPTOR = KindDescriptor(
    kind="ZoneInsight",
    plural="zoneinsights",
    spec_type=ZoneInsightSpec,
    scope=Scope.ZONE,
    owner=Owner.ZONE,
    sync=SyncDirection.ZONE_TO_GLOBAL,
    short_names=("zinsight",),
    dns_label_name=True,  # one per zone, named after it
    references=_references,
    checks=_named_after_zone,
    columns=(
        Column("ZONE", spec_field("zone")),
        Column("APPLIED", spec_field("appliedVersion")),
        Column("PROXIES", spec_field("connectedProxies")),
        Column("LAST NACK", spec_field("lastNack", "error")),
    ),
    description="Sync state of one zone (written by its zone CP).",
)
