"""Secret: PEM material (a public certificate and its key, or opaque data).

Its ``data`` is never returned by API reads; it reaches only the zones it names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Annotated, Literal

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_private_key
from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from meshgate.resources.kinds._columns import spec_field
from meshgate.resources.model import PathMessage, Spec
from meshgate.resources.registry import (
    Column,
    KindDescriptor,
    Owner,
    Reference,
    Scope,
    SyncDirection,
)

ALL_ZONES = "*"
_DATA_KEY = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")
_ZONE_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def _data_key(value: str) -> str:
    if not _DATA_KEY.fullmatch(value):
        raise PydanticCustomError("meshgate", "data keys are letters, digits, '-', '_' or '.'")
    return value


def _zone_or_all(value: str) -> str:
    if value != ALL_ZONES and not _ZONE_LABEL.fullmatch(value):
        raise PydanticCustomError("meshgate", "must be a zone name, or '*' for every zone")
    return value


DataKey = Annotated[str, AfterValidator(_data_key)]
ZoneOrAll = Annotated[str, AfterValidator(_zone_or_all)]


class SecretSpec(Spec):
    type: Literal["tls", "opaque"]
    data: dict[DataKey, Annotated[str, Field(max_length=65536)]] = Field(max_length=32)
    # Which zones receive it: zone names, or ["*"] for every zone; [] keeps it at the global CP.
    zones: list[ZoneOrAll] = Field(default_factory=list, max_length=256)

    def check(self) -> Iterator[PathMessage]:
        if ALL_ZONES in self.zones and len(self.zones) > 1:
            yield ("zones",), "'*' already means every zone: list it alone"
        if len(set(self.zones)) != len(self.zones):
            yield ("zones",), "each zone at most once"
        if self.type == "tls":
            yield from _check_tls(self.data)


def _check_tls(data: dict[str, str]) -> Iterator[PathMessage]:
    missing = [k for k in ("tls.crt", "tls.key") if k not in data]
    for name in missing:
        yield ("data", name), "required for type tls"
    if missing:
        return
    try:
        chain = x509.load_pem_x509_certificates(data["tls.crt"].encode())
    except ValueError:
        yield ("data", "tls.crt"), "must hold one or more PEM certificates (leaf first)"
        return
    try:
        key = load_pem_private_key(data["tls.key"].encode(), password=None)
    except (ValueError, TypeError):
        yield ("data", "tls.key"), "must hold an unencrypted PEM private key"
        return
    leaf_public = chain[0].public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    key_public = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    if leaf_public != key_public:
        yield ("data", "tls.key"), "does not match the first certificate in tls.crt"


def _references(spec: SecretSpec) -> Iterable[Reference]:
    for i, zone in enumerate(spec.zones):
        if zone != ALL_ZONES:
            yield Reference("Zone", zone, ("zones", i))


def _target_zones(spec: SecretSpec) -> frozenset[str] | None:
    return None if ALL_ZONES in spec.zones else frozenset(spec.zones)


def _keys(doc: object) -> str:
    spec = doc.get("spec", {}) if isinstance(doc, dict) else {}
    return ",".join(sorted(spec.get("data", {}) or spec.get("dataKeys", [])))


DESCRIPTOR = KindDescriptor(
    kind="Secret",
    plural="secrets",
    spec_type=SecretSpec,
    scope=Scope.GLOBAL,
    owner=Owner.OPERATOR,
    sync=SyncDirection.GLOBAL_TO_ZONE,
    short_names=("secret",),
    redacted_fields=("data",),
    references=_references,
    target_zones=_target_zones,
    columns=(
        Column("TYPE", spec_field("type")),
        Column("KEYS", _keys),
        Column("ZONES", spec_field("zones")),
    ),
    description="PEM material; data is write-only through the API and reaches only listed zones.",
)
