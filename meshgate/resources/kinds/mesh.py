"""Mesh: a trust domain and how mTLS works inside it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from meshgate.resources.fields import Duration, Name
from meshgate.resources.kinds._columns import spec_field
from meshgate.resources.model import Spec
from meshgate.resources.registry import Column, KindDescriptor, Owner, Scope, SyncDirection


class MtlsSpec(Spec):
    # strict: every hop requires mTLS; permissive: inbound also accepts plaintext (migration).
    mode: Literal["strict", "permissive"] = "strict"
    certificate_ttl: Duration = Field("24h", alias="certificateTTL")
    zone_ca_ttl: Duration = Field("8760h", alias="zoneCATTL")


class MeshSpec(Spec):
    trust_domain: Name
    mtls: MtlsSpec = MtlsSpec()


DESCRIPTOR = KindDescriptor(
    kind="Mesh",
    plural="meshes",
    spec_type=MeshSpec,
    scope=Scope.GLOBAL,
    owner=Owner.OPERATOR,
    sync=SyncDirection.GLOBAL_TO_ZONE,
    short_names=("mesh",),
    dns_label_name=True,
    immutable_fields=("trustDomain",),
    columns=(
        Column("TRUST DOMAIN", spec_field("trustDomain")),
        Column("MTLS", spec_field("mtls", "mode")),
        Column("CERT TTL", spec_field("mtls", "certificateTTL")),
    ),
    description="A trust domain: its root CA is made at the global CP when the mesh is created.",
)
