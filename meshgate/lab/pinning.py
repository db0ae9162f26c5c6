"""Flow pinning on a lab router node (``meshgate.netns.flow_pinning`` in that node's namespace)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from meshgate.netns.flow_pinning import PinnedHop, pin_flows, unpin_flows
from meshgate.netns.namespace import Namespace


class HasNetns(Protocol):
    def netns(self, node: str, /) -> str: ...


def pin_in_node(
    lab: HasNetns, node: str, next_hops: Mapping[str, str], destinations: Sequence[str]
) -> list[PinnedHop]:
    """Pin connections that ``node`` forwards to ``destinations`` to the next hop (address ->
    the node's interface towards it) they started with."""
    return pin_flows(Namespace.attach(lab.netns(node)), next_hops, destinations=destinations)


def unpin_in_node(lab: HasNetns, node: str) -> None:
    unpin_flows(Namespace.attach(lab.netns(node)))
