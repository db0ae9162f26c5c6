"""Every kind meshgate knows, in one registry."""

from __future__ import annotations

from meshgate.resources.kinds import (
    cross_zone,
    dataplane,
    edge,
    edge_status,
    global_service,
    mesh,
    secret,
    service,
    system,
    zone,
    zone_ingress,
    zone_insight,
)
from meshgate.resources.registry import Registry

REGISTRY = Registry(
    [
        mesh.DESCRIPTOR,
        zone.DESCRIPTOR,
        service.DESCRIPTOR,
        global_service.DESCRIPTOR,
        edge.DESCRIPTOR,
        secret.DESCRIPTOR,
        dataplane.DESCRIPTOR,
        zone_ingress.DESCRIPTOR,
        zone_insight.DESCRIPTOR,
        edge_status.DESCRIPTOR,
        cross_zone.DESCRIPTOR,
        system.MESH_CA,
        system.SIGNING_KEY,
        system.ADMIN_CREDENTIAL,
        system.WRITE_FENCE,
        system.USED_TOKEN,
        system.ZONE_ENROLLMENT,
        system.ZONE_SESSION,
        system.SYNC_CHECKPOINT,
    ]
)

__all__ = ["REGISTRY"]
