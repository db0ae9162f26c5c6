"""Flow pinning on a router: a TCP connection keeps going to the next hop it started with.

Models a stateful L4 tier (a load balancer with a connection table) in front of anycast edges:
when the route to a VIP moves (an edge withdraws, ECMP changes), new connections follow the
current route while established ones stay with their edge, until they end.

How, inside the router's namespace:

- nftables, ``forward`` hook: the first packet of a connection (``ct state new``) to a pinned
  destination records the next hop the kernel chose for it in the conntrack mark
  (``ct mark set rt ip nexthop map {hop: mark}``);
- ``prerouting`` hook (mangle, before the route lookup): packets in the original direction of a
  marked connection get that mark as their packet mark (replies are left alone: they follow the
  main table back to the client);
- one ``ip rule fwmark MARK/0xff lookup TABLE`` per next hop, whose table routes the pinned
  destinations via that next hop.

Marks use the low byte (``MARK_MASK``); tables and rule priorities are ``PIN_BASE + i``. The router
namespace has its own nftables, rules and tables, so these only need to be unique in it; pinning
again replaces what was there (hops sorted by address keep their marks).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from meshgate.netns.namespace import Namespace, check_ifname

NFT_TABLE: Final = "meshgate_pin"
MARK_MASK: Final = 0xFF
#: routing tables and rule priorities PIN_BASE + 0..254
PIN_BASE: Final = 7100
MAX_HOPS: Final = 254


@dataclass(frozen=True)
class PinnedHop:
    """One next hop: its conntrack/packet mark and the routing table used by its connections."""

    address: str
    ifname: str
    mark: int
    table: int

    @property
    def priority(self) -> int:
        return self.table


def plan(next_hops: Mapping[str, str]) -> list[PinnedHop]:
    """Marks and tables for ``next_hops`` (address -> interface), in address order."""
    if not next_hops:
        raise ValueError("no next hops to pin flows to")
    if len(next_hops) > MAX_HOPS:
        raise ValueError(f"at most {MAX_HOPS} next hops")
    hops = sorted(next_hops.items(), key=lambda item: ipaddress.IPv4Address(item[0]))
    return [
        PinnedHop(str(ipaddress.IPv4Address(address)), check_ifname(ifname), index + 1, PIN_BASE + index + 1)
        for index, (address, ifname) in enumerate(hops)
    ]


def render_ruleset(hops: Sequence[PinnedHop], destinations: Sequence[str]) -> str:
    """The nftables table (``nft -f`` input) for ``hops``."""
    marks = ", ".join(f"{hop.address} : {hop.mark:#x}" for hop in hops)
    prefixes = ", ".join(str(ipaddress.IPv4Network(prefix)) for prefix in destinations)
    return f"""table ip {NFT_TABLE} {{
  set destinations {{
    type ipv4_addr; flags interval;
    elements = {{ {prefixes} }}
  }}
  map hop_marks {{
    type ipv4_addr : mark;
    elements = {{ {marks} }}
  }}
  chain prerouting {{
    type filter hook prerouting priority mangle; policy accept;
    ct direction original ct mark and {MARK_MASK:#x} != 0 meta mark set ct mark and {MARK_MASK:#x}
  }}
  chain forward {{
    type filter hook forward priority mangle; policy accept;
    ct state new ip daddr @destinations ct mark set rt ip nexthop map @hop_marks
  }}
}}
"""


def pin_flows(
    router: Namespace, next_hops: Mapping[str, str], *, destinations: Sequence[str] = ("0.0.0.0/0",)
) -> list[PinnedHop]:
    """Pin connections forwarded by ``router`` to ``destinations`` to the next hop (address ->
    the router's interface towards it) they started with. Replaces earlier pinning."""
    hops = plan(next_hops)
    if not destinations:
        raise ValueError("no destinations to pin")
    ruleset = render_ruleset(hops, destinations)
    unpin_flows(router)
    for hop in hops:
        for prefix in destinations:
            network = ipaddress.IPv4Network(prefix)
            router.replace_route(str(network), via=hop.address, dev=hop.ifname, table=hop.table)
        router.ip(
            "rule", "add", "fwmark", f"{hop.mark:#x}/{MARK_MASK:#x}",
            "lookup", str(hop.table), "priority", str(hop.priority),
        )  # fmt: skip
        # a pinned connection's replies arrive from a next hop the main table may no longer
        # point to: strict reverse-path filtering would drop them (loose is the most it takes)
        router.sysctl(f"net/ipv4/conf/{hop.ifname}/rp_filter", 2)  # slashes: names may hold dots
    router.run("nft", "-f", "-", input=ruleset)
    return hops


def unpin_flows(router: Namespace) -> None:
    """Remove flow pinning from ``router`` (idempotent): connections follow the main table."""
    router.run("nft", "delete", "table", "ip", NFT_TABLE, check=False)
    for rule in json.loads(router.ip("-j", "rule", "show").stdout or "[]"):
        priority = int(rule.get("priority", -1))
        if PIN_BASE < priority <= PIN_BASE + MAX_HOPS:
            router.ip("rule", "del", "priority", str(priority))
    tables = {str(route.get("table")) for route in router.ip_json("route", "show", "table", "all")}
    for table in range(PIN_BASE + 1, PIN_BASE + MAX_HOPS + 1):
        if str(table) in tables:
            router.ip("route", "flush", "table", str(table))


def pinned(router: Namespace) -> bool:
    """Whether ``router`` has flow pinning in place."""
    return router.run("nft", "list", "table", "ip", NFT_TABLE, check=False).returncode == 0
