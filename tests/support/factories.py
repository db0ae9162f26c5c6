"""Resources for tests, built the way a user would write them."""

from __future__ import annotations

from typing import Any

from meshgate.resources.kinds import REGISTRY
from meshgate.resources.model import API_VERSION, Resource


def resource(kind: str, name: str, spec: dict[str, Any], **labels: str) -> Resource:
    descriptor = REGISTRY[kind]
    return Resource(kind, name, descriptor.spec_type.model_validate(spec), labels)


def doc(kind: str, name: str, spec: dict[str, Any], **labels: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if labels:
        metadata["labels"] = labels
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": metadata, "spec": spec}


def zone(name: str, region: str = "", **labels: str) -> Resource:
    return resource("Zone", name, {"region": region or name}, **labels)


def service(name: str, port: int = 8080, **labels: str) -> Resource:
    return resource(
        "Service", name, {"ports": [{"name": "http", "port": port, "protocol": "http"}]}, **labels
    )


def opaque_secret(name: str, size: int = 16) -> Resource:
    return resource("Secret", name, {"type": "opaque", "data": {"blob": "x" * size}})
