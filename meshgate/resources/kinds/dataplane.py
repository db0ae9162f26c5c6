"""Dataplane: a proxy registered by its zone CP, with the workloads it fronts and their health."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Literal

from pydantic import Field

from meshgate.resources.fields import DnsLabel, IPAddress, Port, Text
from meshgate.resources.kinds._columns import count, fraction, spec_field
from meshgate.resources.kinds._zone_names import named_in_zone
from meshgate.resources.model import PathMessage, Spec
from meshgate.resources.registry import (
    Column,
    KindDescriptor,
    Owner,
    Reference,
    Scope,
    SyncDirection,
)

Health = Literal["healthy", "unhealthy", "unknown"]


class Workload(Spec):
    service: DnsLabel
    address: IPAddress
    port: Port
    health: Health = "unknown"


class DataplaneSpec(Spec):
    zone: DnsLabel
    role: Literal["local", "ingress"]
    address: IPAddress  # where other proxies reach its inbound mTLS listener
    port: Port
    workloads: list[Workload] = Field(default_factory=list, max_length=1024)
    version: Text = ""  # meshgate version of the proxy

    def check(self) -> Iterator[PathMessage]:
        if self.role == "ingress" and self.workloads:
            yield ("workloads",), "an ingress fronts no workloads"
        services = {w.service for w in self.workloads}
        if len(services) > 1:
            yield ("workloads",), "a local proxy fronts the instances of one service only"


def _references(spec: DataplaneSpec) -> Iterable[Reference]:
    yield Reference("Zone", spec.zone, ("zone",))


DESCRIPTOR = KindDescriptor(
    kind="Dataplane",
    plural="dataplanes",
    spec_type=DataplaneSpec,
    scope=Scope.ZONE,
    owner=Owner.ZONE,
    sync=SyncDirection.ZONE_TO_GLOBAL,
    short_names=("dp",),
    references=_references,
    checks=named_in_zone,
    columns=(
        Column("ZONE", spec_field("zone")),
        Column("ROLE", spec_field("role")),
        Column("ADDRESS", spec_field("address")),
        Column("WORKLOADS", count("workloads")),
        Column("HEALTHY", fraction("workloads", "health", "healthy")),
    ),
    description="A registered proxy (written by its zone CP).",
)
