"""meshgate's identity conventions on top of SPIFFE IDs.

| role        | SPIFFE ID                                   | Identity.zone | Identity.name |
| ----------- | ------------------------------------------- | ------------- | ------------- |
| service     | ``spiffe://<td>/svc/<service>``             | None          | service       |
| zone-cp     | ``spiffe://<td>/zone/<zone>/cp``            | zone          | zone          |
| ingress     | ``spiffe://<td>/zone/<zone>/ingress/<name>``| zone          | ingress name  |
| edge        | ``spiffe://<td>/zone/<zone>/edge/<name>``   | zone          | edge name     |
| global-cp   | ``spiffe://<td>/global/cp``                 | None          | ``global``    |

Every service, zone, ingress and edge name is a DNS label: ``[a-z0-9]([-a-z0-9]*[a-z0-9])?``, at
most 63 characters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from meshgate.pki.spiffe import SpiffeId, validate_trust_domain

Role = Literal["service", "zone-cp", "ingress", "edge", "global-cp"]
ZONE_SCOPED_ROLES: frozenset[Role] = frozenset({"zone-cp", "ingress", "edge"})

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def is_dns_label(value: str) -> bool:
    return isinstance(value, str) and len(value) <= 63 and _DNS_LABEL.fullmatch(value) is not None


def require_dns_label(value: str, what: str) -> str:
    """Return ``value`` if it is a DNS label, else raise ValueError naming ``what``."""
    if not is_dns_label(value):
        raise ValueError(
            f"{what} {value!r} is not a DNS label (lowercase letters, digits and '-', "
            "starting and ending with a letter or digit, at most 63 characters)"
        )
    return value


@dataclass(frozen=True, slots=True)
class Identity:
    """What a SPIFFE ID means in meshgate (see the module table)."""

    role: Role
    zone: str | None
    name: str


def service_id(trust_domain: str, service: str) -> SpiffeId:
    return SpiffeId(validate_trust_domain(trust_domain), f"/svc/{require_dns_label(service, 'service')}")


def zone_cp_id(trust_domain: str, zone: str) -> SpiffeId:
    return SpiffeId(validate_trust_domain(trust_domain), f"/zone/{require_dns_label(zone, 'zone')}/cp")


def ingress_id(trust_domain: str, zone: str, name: str) -> SpiffeId:
    zone = require_dns_label(zone, "zone")
    name = require_dns_label(name, "ingress name")
    return SpiffeId(validate_trust_domain(trust_domain), f"/zone/{zone}/ingress/{name}")


def edge_id(trust_domain: str, zone: str, name: str) -> SpiffeId:
    zone = require_dns_label(zone, "zone")
    name = require_dns_label(name, "edge name")
    return SpiffeId(validate_trust_domain(trust_domain), f"/zone/{zone}/edge/{name}")


def global_cp_id(trust_domain: str) -> SpiffeId:
    return SpiffeId(validate_trust_domain(trust_domain), "/global/cp")


def classify(spiffe_id: SpiffeId) -> Identity:
    """The meshgate identity of ``spiffe_id``; ValueError for any other shape."""
    seg = spiffe_id.segments
    identity: Identity | None = None
    match seg:
        case ("svc", service):
            identity = Identity("service", None, service)
        case ("zone", zone, "cp"):
            identity = Identity("zone-cp", zone, zone)
        case ("zone", zone, "ingress", name):
            identity = Identity("ingress", zone, name)
        case ("zone", zone, "edge", name):
            identity = Identity("edge", zone, name)
        case ("global", "cp"):
            identity = Identity("global-cp", None, "global")
        case _:
            pass
    if identity is None:
        raise ValueError(
            f"{spiffe_id} is not a meshgate identity (expected /svc/<service>, "
            "/zone/<zone>/cp, /zone/<zone>/ingress/<name>, /zone/<zone>/edge/<name> or /global/cp)"
        )
    if identity.zone is not None and not is_dns_label(identity.zone):
        raise ValueError(f"{spiffe_id}: zone {identity.zone!r} is not a DNS label")
    if not is_dns_label(identity.name) and identity.role != "global-cp":
        raise ValueError(f"{spiffe_id}: name {identity.name!r} is not a DNS label")
    return identity
