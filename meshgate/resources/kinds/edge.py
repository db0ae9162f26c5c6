"""Edge: a node in a zone that announces anycast VIPs over BGP and forwards to zones."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from typing import Annotated, Literal

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from meshgate.resources.fields import ASN, Community, DnsLabel, IPAddress, IPv4, Text, Timestamp
from meshgate.resources.kinds._columns import count, spec_field
from meshgate.resources.model import PathMessage, Spec
from meshgate.resources.registry import (
    Column,
    KindDescriptor,
    Owner,
    Reference,
    Scope,
    SyncDirection,
)


def _router_id(value: str) -> str:
    if value == "0.0.0.0":  # noqa: S104 - compared, not bound
        raise PydanticCustomError("meshgate", "must not be 0.0.0.0 (a BGP identifier is non-zero)")
    return value


RouterID = Annotated[IPv4, AfterValidator(_router_id)]


class BgpNeighbor(Spec):
    address: IPAddress
    peer_asn: ASN = Field(alias="peerASN")
    local_address: IPAddress | None = None
    description: Text = ""


class BgpSpec(Spec):
    local_asn: ASN = Field(alias="localASN")
    router_id: RouterID = Field(alias="routerID")
    hold_time: int = Field(90, ge=3, le=65535)  # seconds; 0 (no keepalives) is not offered
    neighbors: list[BgpNeighbor] = Field(min_length=1, max_length=32)
    # Identical on every edge of a VIP, or upstream ECMP collapses onto one path.
    communities: list[Community] = Field(default_factory=list, max_length=32)
    med: int = Field(0, ge=0, le=4294967295)


DrainSignal = Literal["graceful-shutdown", "as-path-prepend"]


def _default_signals() -> list[DrainSignal]:
    return ["graceful-shutdown"]


class DrainSpec(Spec):
    """Set by ``meshgate edge drain``: announce with these signals, wait, then withdraw."""

    reason: Text = ""
    requested_at: Timestamp | None = None
    signals: list[DrainSignal] = Field(default_factory=_default_signals, min_length=1)


class EdgeSpec(Spec):
    zone: DnsLabel
    bgp: BgpSpec
    drain: DrainSpec | None = None

    def check(self) -> Iterator[PathMessage]:
        seen: dict[str, int] = {}
        for i, n in enumerate(self.bgp.neighbors):
            if n.address in seen:
                yield (
                    ("bgp", "neighbors", i, "address"),
                    (f"duplicate neighbor (also bgp.neighbors[{seen[n.address]}])"),
                )
            seen.setdefault(n.address, i)
            if n.local_address is not None:
                family = ipaddress.ip_address(n.address).version
                if ipaddress.ip_address(n.local_address).version != family:
                    yield (
                        ("bgp", "neighbors", i, "localAddress"),
                        f"must be an IPv{family} address, as the neighbor's address is",
                    )
        if self.drain is not None and len(set(self.drain.signals)) != len(self.drain.signals):
            yield ("drain", "signals"), "each signal at most once"


def _references(spec: EdgeSpec) -> Iterable[Reference]:
    yield Reference("Zone", spec.zone, ("zone",))


def _draining(doc: object) -> str:
    spec = doc.get("spec", {}) if isinstance(doc, dict) else {}
    return "yes" if spec.get("drain") else "no"


DESCRIPTOR = KindDescriptor(
    kind="Edge",
    plural="edges",
    spec_type=EdgeSpec,
    scope=Scope.ZONE,
    owner=Owner.OPERATOR,
    sync=SyncDirection.GLOBAL_TO_ZONE,
    short_names=("edge",),
    dns_label_name=True,  # appears in spiffe://<td>/zone/<zone>/edge/<name>
    references=_references,
    target_zones=lambda spec: frozenset({spec.zone}),
    columns=(
        Column("ZONE", spec_field("zone")),
        Column("ASN", spec_field("bgp", "localASN")),
        Column("ROUTER ID", spec_field("bgp", "routerID")),
        Column("NEIGHBORS", count("bgp", "neighbors")),
        Column("DRAIN", _draining),
    ),
    description="An anycast edge node: its BGP session settings and drain request.",
)
