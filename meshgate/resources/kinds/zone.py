"""Zone: a region with its own zone control plane."""

from __future__ import annotations

from pydantic import Field

from meshgate.resources.fields import Text
from meshgate.resources.kinds._columns import spec_field, status_field
from meshgate.resources.model import Spec
from meshgate.resources.registry import Column, KindDescriptor, Owner, Scope, SyncDirection


class Location(Spec):
    """Where the zone is, for nearest-zone choice when no RTT has been measured yet."""

    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)


class ZoneSpec(Spec):
    region: Text = ""
    location: Location | None = None
    enabled: bool = True


DESCRIPTOR = KindDescriptor(
    kind="Zone",
    plural="zones",
    spec_type=ZoneSpec,
    scope=Scope.GLOBAL,
    owner=Owner.OPERATOR,
    sync=SyncDirection.GLOBAL_TO_ZONE,
    short_names=("zone",),
    dns_label_name=True,  # appears in SNI <service>.<zone>.svc.meshgate and in SPIFFE IDs
    columns=(
        Column("REGION", spec_field("region")),
        Column("ENABLED", spec_field("enabled")),
        Column("CONNECTED", status_field("sync", "connected", default="never")),
        Column("APPLIED", status_field("sync", "appliedVersion", default="-")),
        Column("LAG", status_field("sync", "lag", default="-")),
        Column("DATAPLANES", status_field("inventory", "summary", default="0")),
        Column("LAST NACK", status_field("sync", "lastNack", "error")),
    ),
    description="A region running a zone control plane.",
)
