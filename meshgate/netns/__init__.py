"""Network namespaces, veth links, upstream routers (BIRD, FRR) and flow pinning: the building
blocks of the edge tests and of the lab runner. Needs root (``ip netns``)."""

from meshgate.netns.namespace import (
    CommandFailed,
    Namespace,
    Owner,
    cleanup_stale,
    list_namespaces,
    process_alive,
    terminate,
    veth,
    veth_to_root,
    wait_until,
    wait_until_async,
)

__all__ = [
    "CommandFailed",
    "Namespace",
    "Owner",
    "cleanup_stale",
    "list_namespaces",
    "process_alive",
    "terminate",
    "veth",
    "veth_to_root",
    "wait_until",
    "wait_until_async",
]
