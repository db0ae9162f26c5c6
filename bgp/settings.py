"""The edge's BGP settings, read from the Edge resource's ``spec.bgp``.

The control plane validated the spec already; the edge validates it again (the document crossed
a network and a store), reporting every violation with its field path, then trusts the types.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from bgp import values

T = TypeVar("T")

MAX_NEIGHBORS = 32
MAX_COMMUNITIES = 32
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Neighbor:
    address: str
    peer_asn: int
    local_address: str | None = None
    description: str = ""  # for status only: never written into ExaBGP's configuration

    @property
    def version(self) -> int:
        """4 or 6: the address family of the session (and of the routes it carries)."""
        return values.address(self.address).version


@dataclass(frozen=True)
class BgpSettings:
    local_asn: int
    router_id: str
    hold_time: int
    neighbors: tuple[Neighbor, ...]
    communities: tuple[str, ...] = ()
    med: int = 0


class SettingsInvalid(ValueError):
    """Every violation in a ``spec.bgp``, one ``path: message`` per line."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = tuple(errors)


class _Reader:
    """Collects violations instead of stopping at the first one."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def field(self, doc: Mapping[str, object], key: str, path: str, parse: Callable[[object], T]) -> T | None:
        if key not in doc:
            self.errors.append(f"{path}: required")
            return None
        return self.value(doc[key], path, parse)

    def value(self, raw: object, path: str, parse: Callable[[object], T]) -> T | None:
        try:
            return parse(raw)
        except ValueError as exc:
            self.errors.append(f"{path}: {exc}")
            return None

    def mapping(self, raw: object, path: str) -> Mapping[str, object] | None:
        if not isinstance(raw, Mapping):
            self.errors.append(f"{path}: must be an object")
            return None
        return raw

    def sequence(self, raw: object, path: str, most: int) -> list[object] | None:
        if not isinstance(raw, list | tuple):
            self.errors.append(f"{path}: must be a list")
            return None
        if len(raw) > most:
            self.errors.append(f"{path}: at most {most} entries, not {len(raw)}")
            return None
        return list(raw)


def _description(raw: object) -> str:
    if not isinstance(raw, str):
        raise ValueError("must be a string")
    if len(raw) > 1024 or _CONTROL.search(raw):
        raise ValueError("must be at most 1024 characters with no control characters")
    return raw


def _neighbor(r: _Reader, raw: object, path: str) -> Neighbor | None:
    doc = r.mapping(raw, path)
    if doc is None:
        return None
    address = r.field(doc, "address", f"{path}.address", values.address)
    peer_asn = r.field(doc, "peerASN", f"{path}.peerASN", values.asn)
    local = None
    if doc.get("localAddress") is not None:
        local = r.value(doc["localAddress"], f"{path}.localAddress", values.address)
        if local is not None and address is not None and local.version != address.version:
            r.errors.append(
                f"{path}.localAddress: must be an IPv{address.version} address, as the neighbor's address is"
            )
            local = None
    description = r.value(doc.get("description", ""), f"{path}.description", _description)
    if address is None or peer_asn is None or description is None:
        return None
    if doc.get("localAddress") is not None and local is None:
        return None
    return Neighbor(str(address), peer_asn, None if local is None else str(local), description)


def settings_from_spec(bgp: object) -> BgpSettings:
    """``BgpSettings`` from the Edge's ``spec.bgp`` JSON, or ``SettingsInvalid`` (a ValueError)
    naming each bad field: ``bgp.neighbors[1].address: must be an IPv4 or IPv6 address, ...``."""
    r = _Reader()
    doc = r.mapping(bgp, "bgp")
    if doc is None:
        raise SettingsInvalid(r.errors)
    local_asn = r.field(doc, "localASN", "bgp.localASN", values.asn)
    router_id = r.field(doc, "routerID", "bgp.routerID", values.router_id)
    hold_time = r.value(doc.get("holdTime", 90), "bgp.holdTime", values.hold_time)
    med = r.value(doc.get("med", 0), "bgp.med", values.med)

    neighbors: list[Neighbor] = []
    raw_neighbors = (
        r.sequence(doc["neighbors"], "bgp.neighbors", MAX_NEIGHBORS) if "neighbors" in doc else None
    )
    if "neighbors" not in doc:
        r.errors.append("bgp.neighbors: required")
    elif raw_neighbors is not None and not raw_neighbors:
        r.errors.append("bgp.neighbors: at least one neighbor")
    seen: dict[str, int] = {}
    for i, raw in enumerate(raw_neighbors or []):
        neighbor = _neighbor(r, raw, f"bgp.neighbors[{i}]")
        if neighbor is None:
            continue
        if neighbor.address in seen:
            r.errors.append(
                f"bgp.neighbors[{i}].address: duplicate neighbor (also bgp.neighbors[{seen[neighbor.address]}])"
            )
            continue
        seen[neighbor.address] = i
        neighbors.append(neighbor)

    communities: list[str] = []
    raw_communities = r.sequence(doc.get("communities", []), "bgp.communities", MAX_COMMUNITIES)
    for i, raw in enumerate(raw_communities or []):
        community = r.value(raw, f"bgp.communities[{i}]", values.community)
        if community is not None and community not in communities:
            communities.append(community)

    if r.errors:
        raise SettingsInvalid(r.errors)
    assert local_asn is not None and router_id is not None and hold_time is not None and med is not None
    return BgpSettings(local_asn, router_id, hold_time, tuple(neighbors), tuple(communities), med)
