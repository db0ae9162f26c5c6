"""Versions of resources as sinks receive them (needs the resource model; proxies do not)."""

from __future__ import annotations

from meshgate.resources.model import Resource
from meshgate.resources.views import sync_document
from meshgate.sync.versions import content_version


def resource_version(resource: Resource) -> str:
    """The version of what a sink receives of ``resource``: private fields never count, so a
    zone holding the document without them computes the same version as the global CP."""
    return content_version(sync_document(resource))
