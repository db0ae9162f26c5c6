"""EdgeStatus: an edge's BGP sessions, the VIPs it announces, its speaker, its drain and the zones
it reaches, as the edge reports them to its zone CP (which syncs them to the global CP)."""

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
DrainPhase = Literal["keepalive-off", "signalled", "withdrawn"]


class BgpSession(Spec):
    neighbor: IPAddress
    state: SessionState
    since: Timestamp | None = None
    reason: Text = ""  # why it is not established (notification, connect error), when known
    flaps: int = Field(0, ge=0)  # times it left established since the edge started


class Announcement(Spec):
    vip: IPAddress
    state: Literal["announced", "draining", "withdrawn"]
    since: Timestamp | None = None
    reason: Text = ""


class SpeakerStatus(Spec):
    """The BGP speaker (ExaBGP) the edge supervises."""

    running: bool
    restarts: int = Field(0, ge=0)
    error: Text = ""


class DrainStatus(Spec):
    """Where a drain requested on the Edge stands: keepalive off (new connections refused by
    the health check), routes signalled (GRACEFUL_SHUTDOWN / prepend), routes withdrawn."""

    phase: DrainPhase
    started_at: Timestamp | None = None
    signalled_at: Timestamp | None = None
    withdrawn_at: Timestamp | None = None
    active_connections: int | None = Field(None, ge=0)
    withdraw_reason: Text | None = None  # "connections drained", "deadline", ...


class ZoneReach(Spec):
    """One zone as this edge sees it."""

    zone: DnsLabel
    reachable: bool
    rtt_ms: float | None = Field(None, ge=0)
    ejected: bool = False


class EdgeStatusSpec(Spec):
    zone: DnsLabel
    sessions: list[BgpSession] = Field(default_factory=list, max_length=64)
    announcements: list[Announcement] = Field(default_factory=list, max_length=256)
    updated_at: Timestamp | None = None
    speaker: SpeakerStatus | None = None
    drain: DrainStatus | None = None
    zones: list[ZoneReach] = Field(default_factory=list, max_length=256)
    config_age_seconds: float | None = Field(None, ge=0)


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
        Column("DRAIN", spec_field("drain", "phase", default="-")),
    ),
    description="BGP sessions, announcements, drain and zones of one edge (reported by the edge).",
)
