"""ExaBGP 5 API command lines (pure: strings in, one line out).

Verified against ExaBGP 5.0.15 (each answered ``done`` and reached BIRD / FRR as expected)::

    announce route 203.0.113.10/32 next-hop self med 0 community [65000:1 65535:0] as-path [65000 65000 65000]
    neighbor 192.0.2.1 announce route 203.0.113.10/32 next-hop self med 0 large-community [65000:1:2]
    withdraw route 203.0.113.10/32

With an ``as-path`` given, ExaBGP sends it as it is (it does not add its own AS in front on
eBGP), so a prepend of N is the local AS N+1 times; with none, it sends the local AS once.

Everything rendered is rebuilt from parsed numbers and addresses (``bgp.values``), so a line
is always one command: ExaBGP 5.0.15 dispatches a line to the first command name that occurs
anywhere in it (``... community [graceful-shutdown]`` runs ``shutdown``), which is why well-known
communities are written as numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from bgp import values


@dataclass(frozen=True)
class RouteAttributes:
    """What a route carries besides its prefix. ``prepend``: extra copies of the local AS;
    ``graceful_shutdown``: add the GRACEFUL_SHUTDOWN community (65535:0, RFC 8326).
    Validated on construction; ``communities`` is kept in canonical numeric form."""

    med: int
    communities: tuple[str, ...]
    prepend: int = 0
    graceful_shutdown: bool = False

    def __post_init__(self) -> None:
        values.med(self.med)
        values.integer(self.prepend, 0, values.MAX_PREPEND, "a prepend count")
        if not isinstance(self.graceful_shutdown, bool):
            raise ValueError("graceful_shutdown must be a bool")
        if not isinstance(self.communities, tuple):
            raise ValueError("communities must be a tuple")
        canonical: list[str] = []
        for community in self.communities:
            parsed = values.community(community)
            if parsed not in canonical:
                canonical.append(parsed)
        object.__setattr__(self, "communities", tuple(canonical))

    def all_communities(self) -> tuple[str, ...]:
        """The communities sent: ours, then 65535:0 when signalling a graceful shutdown."""
        if self.graceful_shutdown and values.GRACEFUL_SHUTDOWN not in self.communities:
            return (*self.communities, values.GRACEFUL_SHUTDOWN)
        return self.communities


def route_prefix(prefix: str) -> str:
    """The canonical prefix of a route: a bare address becomes its /32 or /128."""
    return str(values.prefix(prefix))


def _target(neighbor: str | None) -> str:
    return "" if neighbor is None else f"neighbor {values.address(neighbor)} "


def announce(prefix: str, attrs: RouteAttributes, *, local_asn: int, neighbor: str | None = None) -> str:
    """``[neighbor N ]announce route P next-hop self med M [community [..]] [large-community [..]]
    [as-path [..]]``; next-hop self is the session's local address, so the route's family must
    be the session's."""
    if not isinstance(attrs, RouteAttributes):
        raise ValueError("attrs must be RouteAttributes")
    asn = values.asn(local_asn)
    line = (
        f"{_target(neighbor)}announce route {route_prefix(prefix)} next-hop self med {values.med(attrs.med)}"
    )
    communities = [values.community(c) for c in attrs.all_communities()]
    standard = [c for c in communities if not values.is_large(c)]
    large = [c for c in communities if values.is_large(c)]
    if standard:
        line += f" community [{' '.join(standard)}]"
    if large:
        line += f" large-community [{' '.join(large)}]"
    prepend = values.integer(attrs.prepend, 0, values.MAX_PREPEND, "a prepend count")
    if prepend:
        line += f" as-path [{' '.join([str(asn)] * (prepend + 1))}]"
    return line


def withdraw(prefix: str, *, neighbor: str | None = None) -> str:
    """``[neighbor N ]withdraw route P``: ExaBGP matches the route by its prefix alone."""
    return f"{_target(neighbor)}withdraw route {route_prefix(prefix)}"
