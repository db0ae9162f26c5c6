"""GlobalService: one public name and anycast address, served from the nearest healthy zone."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Literal

from pydantic import Field

from meshgate.resources.fields import DnsLabel, Hostname, IPAddress, Name, Port
from meshgate.resources.kinds._columns import each, spec_field
from meshgate.resources.kinds.secret import SecretSpec
from meshgate.resources.kinds.service import ServiceSpec
from meshgate.resources.model import PathMessage, Resource, Spec
from meshgate.resources.registry import (
    Column,
    KindDescriptor,
    Lookup,
    Owner,
    Reference,
    Scope,
    SyncDirection,
    UniqueKey,
)

PublicProtocol = Literal["http", "https", "tcp", "tls-passthrough"]


class GlobalServicePort(Spec):
    name: DnsLabel
    port: Port
    protocol: PublicProtocol
    target_port: DnsLabel  # names a port of the Service behind it


class ZonePreference(Spec):
    """Failover order and split: the lowest priority with a healthy zone serves; within one
    priority the nearest zone serves, unless weights are set, then traffic splits by weight."""

    zone: DnsLabel
    priority: int = Field(0, ge=0, le=1000)
    weight: int | None = Field(None, ge=1, le=1000)


class GlobalServiceSpec(Spec):
    service: DnsLabel
    hostnames: list[Hostname] = Field(default_factory=list, max_length=100)
    vips: list[IPAddress] = Field(min_length=1, max_length=16)
    ports: list[GlobalServicePort] = Field(min_length=1, max_length=64)
    certificate_ref: Name | None = None  # a Secret of type tls, required for https ports
    zones: list[ZonePreference] = Field(default_factory=list, max_length=64)  # empty: every zone

    def check(self) -> Iterator[PathMessage]:
        yield from _duplicates(self.vips, "vips", "address")
        yield from _duplicates(self.hostnames, "hostnames", "hostname")
        yield from _duplicates([p.name for p in self.ports], "ports", "port name", "name")
        yield from _duplicates([p.port for p in self.ports], "ports", "port number", "port")
        yield from _duplicates([z.zone for z in self.zones], "zones", "zone", "zone")
        needs_cert = [i for i, p in enumerate(self.ports) if p.protocol == "https"]
        if needs_cert and self.certificate_ref is None:
            yield (
                ("certificateRef",),
                (f"required: ports[{needs_cert[0]}] is https, the edge needs a certificate Secret"),
            )
        if any(p.protocol in ("http", "https") for p in self.ports) and not self.hostnames:
            yield ("hostnames",), "at least one hostname is required for http/https ports"
        by_priority: dict[int, list[int]] = {}
        for i, pref in enumerate(self.zones):
            by_priority.setdefault(pref.priority, []).append(i)
        for priority, members in by_priority.items():
            weighted = [i for i in members if self.zones[i].weight is not None]
            if weighted and len(weighted) != len(members):
                missing = next(i for i in members if self.zones[i].weight is None)
                yield (
                    ("zones", missing, "weight"),
                    (f"zones of priority {priority} must all set a weight or none of them"),
                )


def _duplicates(
    values: Iterable[object], field: str, what: str, sub: str | None = None
) -> Iterator[PathMessage]:
    first: dict[object, int] = {}
    for i, value in enumerate(values):
        if value in first:
            path: tuple[str | int, ...] = (field, i, sub) if sub else (field, i)
            yield path, f"duplicate {what} {value!r} (also {field}[{first[value]}])"
        else:
            first[value] = i


def _references(spec: GlobalServiceSpec) -> Iterable[Reference]:
    yield Reference("Service", spec.service, ("service",))
    if spec.certificate_ref is not None:
        yield Reference("Secret", spec.certificate_ref, ("certificateRef",))
    for i, pref in enumerate(spec.zones):
        yield Reference("Zone", pref.zone, ("zones", i, "zone"))


def _relations(resource: Resource, lookup: Lookup) -> Iterator[PathMessage]:
    spec = resource.spec_as(GlobalServiceSpec)
    service = lookup("Service", spec.service)
    if service is not None:
        ports = service.spec_as(ServiceSpec)
        names = ", ".join(p.name for p in ports.ports)
        for i, port in enumerate(spec.ports):
            target = ports.port_named(port.target_port)
            if target is None:
                yield (
                    ("spec", "ports", i, "targetPort"),
                    (f"Service {spec.service!r} has no port named {port.target_port!r} (it has: {names})"),
                )
            elif port.protocol in ("tcp", "tls-passthrough") and target.protocol != "tcp":
                # the bytes would reach the local proxy's HTTP engine, which answers them 400
                yield (
                    ("spec", "ports", i, "targetPort"),
                    (
                        f"a {port.protocol} port relays bytes as they come, but port {target.name!r} "
                        f"of Service {spec.service!r} is {target.protocol} (its local proxies parse "
                        "HTTP there): target a port with protocol tcp"
                    ),
                )
    if spec.certificate_ref is not None:
        secret = lookup("Secret", spec.certificate_ref)
        if secret is not None and secret.spec_as(SecretSpec).type != "tls":
            yield ("spec", "certificateRef"), f"Secret {spec.certificate_ref!r} is not of type tls"


def _unique_keys(spec: GlobalServiceSpec) -> Iterator[UniqueKey]:
    for i, vip in enumerate(spec.vips):
        for port in spec.ports:
            yield UniqueKey(("listener", vip, port.port), ("vips", i), f"{vip} port {port.port}")


DESCRIPTOR = KindDescriptor(
    kind="GlobalService",
    plural="globalservices",
    spec_type=GlobalServiceSpec,
    scope=Scope.GLOBAL,
    owner=Owner.OPERATOR,
    sync=SyncDirection.GLOBAL_TO_ZONE,
    short_names=("gsvc", "globalservice"),
    dns_label_name=True,
    references=_references,
    relations=_relations,
    unique_keys=_unique_keys,
    columns=(
        Column("SERVICE", spec_field("service")),
        Column("VIPS", spec_field("vips")),
        Column("PORTS", each("ports", "{port}/{protocol}")),
        Column("HOSTNAMES", spec_field("hostnames")),
    ),
    description="A public service: hostnames and anycast VIPs announced by healthy edges.",
)
