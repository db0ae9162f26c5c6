"""Zone-reported resources are named ``<zone>.<name>``: unique across zones at the global CP,
and the local part is what appears in identities (``spiffe://td/zone/<zone>/ingress/<name>``)."""

from __future__ import annotations

import re
from collections.abc import Iterator

from meshgate.resources.model import PathMessage, Resource

_LOCAL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def named_in_zone(resource: Resource) -> Iterator[PathMessage]:
    zone: str = getattr(resource.spec, "zone")  # noqa: B009 - zone-scoped kinds carry spec.zone
    prefix = f"{zone}."
    local = resource.name.removeprefix(prefix)
    if not resource.name.startswith(prefix) or not _LOCAL.fullmatch(local):
        yield ("metadata", "name"), f"must be {prefix}<name>, <name> a DNS label (the zone qualifies it)"


def local_name(resource: Resource) -> str:
    return resource.name.split(".", 1)[1]
