"""Service: a mesh service, served by workloads behind local proxies in one or more zones."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from pydantic import Field

from meshgate.resources.fields import DnsLabel, Port
from meshgate.resources.kinds._columns import each
from meshgate.resources.model import PathMessage, Spec
from meshgate.resources.registry import Column, KindDescriptor, Owner, Scope, SyncDirection


class ServicePort(Spec):
    name: DnsLabel
    port: Port
    protocol: Literal["http", "tcp"] = "tcp"


class ServiceSpec(Spec):
    ports: list[ServicePort] = Field(min_length=1, max_length=64)

    def check(self) -> Iterator[PathMessage]:
        seen_names: dict[str, int] = {}
        seen_ports: dict[int, int] = {}
        for i, port in enumerate(self.ports):
            if port.name in seen_names:
                yield ("ports", i, "name"), f"duplicate port name (also ports[{seen_names[port.name]}])"
            seen_names.setdefault(port.name, i)
            if port.port in seen_ports:
                yield ("ports", i, "port"), f"duplicate port number (also ports[{seen_ports[port.port]}])"
            seen_ports.setdefault(port.port, i)

    def port_named(self, name: str) -> ServicePort | None:
        return next((p for p in self.ports if p.name == name), None)


DESCRIPTOR = KindDescriptor(
    kind="Service",
    plural="services",
    spec_type=ServiceSpec,
    scope=Scope.GLOBAL,
    owner=Owner.OPERATOR,
    sync=SyncDirection.GLOBAL_TO_ZONE,
    short_names=("svc",),
    dns_label_name=True,  # appears in SNI and in spiffe://<td>/svc/<service>
    columns=(Column("PORTS", each("ports", "{name}:{port}/{protocol}")),),
    description="A mesh service; its identity is spiffe://<trust-domain>/svc/<name>.",
)
