"""EdgeStatus: an edge's BGP sessions and the VIPs it announces, as its zone CP reports them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from pydantic import Field

from meshgate.resources.fields import DnsLabel, IPAddress, Text, Timestamp
from meshgate.resources.kinds._columns import each, fraction, spec_field
from meshgate.resources.model import Spec
from meshgate.resources.registry import (
    Column,
    KindDescriptor,
    Owner,
    Reference,
    Scope,
    SyncDirection,
)

SessionState = Literal["idle", "connect", "active", "opensent", "openconfirm", "established", "down"]


class BgpSession(Spec):
    neighbor: IPAddress
    state: SessionState
    since: Timestamp | None = None


class Announcement(Spec):
    vip: IPAddress
    state: Literal["announced", "draining", "withdrawn"]
    since: Timestamp | None = None
    reason: Text = ""


class EdgeStatusSpec(Spec):
    zone: DnsLabel
    sessions: list[BgpSession] = Field(default_factory=list, max_length=64)
    announcements: list[Announcement] = Field(default_factory=list, max_length=256)
    updated_at: Timestamp | None = None


def _references(spec: EdgeStatusSpec) -> Iterable[Reference]:
    yield Reference("Zone", spec.zone, ("zone",))


DESCRIPTOR = KindDescriptor(
    kind="EdgeStatus",
    plural="edgestatuses",
    spec_type=EdgeStatusSpec,
    scope=Scope.ZONE,
    owner=Owner.ZONE,
    sync=SyncDirection.ZONE_TO_GLOBAL,
    short_names=("edgestatus",),
    dns_label_name=True,  # named after its Edge
    references=_references,
    columns=(
        Column("ZONE", spec_field("zone")),
        Column("SESSIONS UP", fraction("sessions", "state", "established")),
        Column("ANNOUNCED", each("announcements", "{vip}", state="announced")),
    ),
    description="BGP sessions and announcements of one edge (written by its zone CP).",
)
