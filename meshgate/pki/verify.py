"""Verify a peer's certificate chain and read its meshgate identity.

The chain is walked here rather than with ``cryptography.x509.verification``: that verifier
refuses URI name constraints ("unsupported name constraint"), and the root CA carries one.

Rules, each failing with one ``VerificationError`` that names its cause:

- the path leads from ``chain[0]`` (the leaf) through certificates of ``chain[1:]`` to one of
  ``roots``, with a valid signature at every step (ECDSA, Ed25519 or RSA; SHA-1 refused);
- every certificate of the path is valid at ``now``;
- no certificate carries a critical extension this module does not understand;
- every issuer is a CA (basicConstraints CA true) with keyUsage keyCertSign, and its pathLen
  allows the CAs below it; an issuer's extendedKeyUsage, if any, allows the requested usage;
- name constraints (URI, DNS, IP) of every CA hold for the certificates below it; any other
  constraint type is refused rather than ignored;
- the leaf is not a CA, has keyUsage digitalSignature (no keyCertSign/cRLSign), an
  extendedKeyUsage with serverAuth or clientAuth as asked, and exactly one URI SAN, a valid
  SPIFFE ID in ``trust_domain`` of a meshgate shape (``classify``; unknown shapes are refused,
  so ``VerifiedPeer.identity`` is never None);
- zone issuer rule: a ``zone/<z>/...`` identity must be issued by zone z's intermediate (never by
  the root directly); a ``svc/...`` identity by any zone intermediate or the root; the
  ``global/cp`` identity only by the root directly (a zone CA must not mint the global CP).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from meshgate.pki.ca import zone_of_intermediate
from meshgate.pki.clock import as_utc
from meshgate.pki.identities import ZONE_SCOPED_ROLES, Identity, classify
from meshgate.pki.spiffe import SpiffeId, validate_trust_domain

Usage = Literal["client", "server"]

MAX_PATH_LENGTH = 5  # certificates, leaf and root included
MAX_PRESENTED = 10  # certificates a peer may send

_USAGE_OID = {"client": ExtendedKeyUsageOID.CLIENT_AUTH, "server": ExtendedKeyUsageOID.SERVER_AUTH}
_UNDERSTOOD_CRITICAL = frozenset(
    {
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        ExtensionOID.NAME_CONSTRAINTS,
    }
)
_WEAK_HASHES = (hashes.SHA1, hashes.MD5)


class VerificationError(Exception):
    """The peer's certificate chain or identity is not acceptable; the message says why."""


@dataclass(frozen=True, slots=True)
class VerifiedPeer:
    spiffe_id: SpiffeId
    identity: Identity
    leaf: x509.Certificate
    #: zone of the intermediate that issued the leaf; None when the root issued it directly
    issuer_zone: str | None
    #: the verified path: leaf, intermediates, root
    path: tuple[x509.Certificate, ...]


def _describe(cert: x509.Certificate) -> str:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    subject = cert.subject.rfc4514_string() or "<empty subject>"
    return f"{subject!r}" + (f" ({', '.join(uris)})" if uris else "")


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> str | None:
    """None if ``parent`` signed ``child``, else why not."""
    if child.issuer != parent.subject:
        return "issuer name differs"
    try:
        child.verify_directly_issued_by(parent)
    except InvalidSignature:
        return "bad signature"
    except (ValueError, TypeError) as exc:
        return f"signature not verifiable ({exc})"
    return None


def _paths(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
) -> tuple[list[tuple[x509.Certificate, ...]], str]:
    """Every signature-valid path from ``leaf`` to a root, and the reason when there is none."""
    found: list[tuple[x509.Certificate, ...]] = []
    failures: list[str] = []
    cache: dict[tuple[int, int], str | None] = {}

    def issued_by(child: x509.Certificate, parent: x509.Certificate) -> str | None:
        key = (id(child), id(parent))
        if key not in cache:
            cache[key] = _issued_by(child, parent)
        return cache[key]

    def extend(path: tuple[x509.Certificate, ...]) -> None:
        cert = path[-1]
        for root in roots:
            why = issued_by(cert, root)
            if why is None:
                found.append((*path, root))
            elif why != "issuer name differs":
                failures.append(f"{why} on {_describe(cert)} for root {_describe(root)}")
        if len(path) + 1 >= MAX_PATH_LENGTH:
            return
        for ca in intermediates:
            if ca in path:
                continue
            why = issued_by(cert, ca)
            if why is None:
                extend((*path, ca))
            elif why != "issuer name differs":
                failures.append(f"{why} on {_describe(cert)} by {_describe(ca)}")

    extend((leaf,))
    if failures:
        return found, failures[0]
    return found, (
        f"chain does not lead to a trusted root: no trusted issuer "
        f"{leaf.issuer.rfc4514_string()!r} found for {_describe(leaf)}"
        if len(intermediates) == 0
        else "chain does not lead to a trusted root (no path from the leaf through the "
        "presented intermediates to any trusted root)"
    )


def _extension(cert: x509.Certificate, cls: type[x509.ExtensionType]) -> x509.ExtensionType | None:
    try:
        return cert.extensions.get_extension_for_class(cls).value
    except x509.ExtensionNotFound:
        return None


def _check_common(cert: x509.Certificate, now: datetime) -> None:
    if now < cert.not_valid_before_utc:
        raise VerificationError(
            f"certificate {_describe(cert)} is not yet valid: valid from "
            f"{cert.not_valid_before_utc.isoformat()}, now is {now.isoformat()}"
        )
    if now >= cert.not_valid_after_utc:
        raise VerificationError(
            f"certificate {_describe(cert)} expired at {cert.not_valid_after_utc.isoformat()}, "
            f"now is {now.isoformat()}"
        )
    if isinstance(cert.signature_hash_algorithm, _WEAK_HASHES):
        raise VerificationError(f"certificate {_describe(cert)} is signed with a weak hash")
    for ext in cert.extensions:
        if ext.critical and ext.oid not in _UNDERSTOOD_CRITICAL:
            raise VerificationError(
                f"certificate {_describe(cert)} has an unsupported critical extension {ext.oid.dotted_string}"
            )


def _check_issuer(ca: x509.Certificate, cas_below: int, usage: Usage) -> None:
    bc = _extension(ca, x509.BasicConstraints)
    if not isinstance(bc, x509.BasicConstraints) or not bc.ca:
        raise VerificationError(f"issuer {_describe(ca)} is not a CA (basicConstraints CA false)")
    ku = _extension(ca, x509.KeyUsage)
    if not isinstance(ku, x509.KeyUsage) or not ku.key_cert_sign:
        raise VerificationError(f"issuer {_describe(ca)} lacks keyUsage keyCertSign")
    if bc.path_length is not None and cas_below > bc.path_length:
        raise VerificationError(
            f"path length violated: issuer {_describe(ca)} allows {bc.path_length} CA(s) "
            f"below it, the chain has {cas_below}"
        )
    eku = _extension(ca, x509.ExtendedKeyUsage)
    if isinstance(eku, x509.ExtendedKeyUsage) and not (
        _USAGE_OID[usage] in eku or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in eku
    ):
        raise VerificationError(f"issuer {_describe(ca)} is not allowed to issue for {usage} use")


def _sans(cert: x509.Certificate) -> list[x509.GeneralName]:
    san = _extension(cert, x509.SubjectAlternativeName)
    return list(san) if isinstance(san, x509.SubjectAlternativeName) else []


def _uri_host(uri: str) -> str | None:
    scheme, sep, rest = uri.partition("://")
    if not sep or not scheme:
        return None
    host = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    host = host.rsplit("@", 1)[-1].split(":", 1)[0]
    return host.lower() or None


def _host_matches(host: str, constraint: str) -> bool:
    constraint = constraint.lower()
    if constraint.startswith("."):
        return host.endswith(constraint)
    return host == constraint


def _dns_matches(name: str, constraint: str) -> bool:
    name, constraint = name.lower().rstrip("."), constraint.lower().rstrip(".")
    if constraint == "":
        return True
    if constraint.startswith("."):
        return name.endswith(constraint)
    return name == constraint or name.endswith("." + constraint)


def _name_matches(name: x509.GeneralName, subtree: x509.GeneralName) -> bool | None:
    """Whether ``name`` is inside ``subtree``; None when the subtree is of another type."""
    if isinstance(subtree, x509.UniformResourceIdentifier):
        if not isinstance(name, x509.UniformResourceIdentifier):
            return None
        host = _uri_host(name.value)
        return host is not None and _host_matches(host, subtree.value)
    if isinstance(subtree, x509.DNSName):
        return _dns_matches(name.value, subtree.value) if isinstance(name, x509.DNSName) else None
    if isinstance(subtree, x509.IPAddress):
        if not isinstance(name, x509.IPAddress) or not isinstance(
            subtree.value, ipaddress.IPv4Network | ipaddress.IPv6Network
        ):
            return None
        addr = name.value
        if not isinstance(addr, ipaddress.IPv4Address | ipaddress.IPv6Address):
            return False
        return addr.version == subtree.value.version and addr in subtree.value
    raise VerificationError(f"unsupported name constraint type {type(subtree).__name__}; refusing the chain")


def _check_name_constraints(ca: x509.Certificate, below: Sequence[x509.Certificate]) -> None:
    nc = _extension(ca, x509.NameConstraints)
    if not isinstance(nc, x509.NameConstraints):
        return
    permitted = list(nc.permitted_subtrees or ())
    excluded = list(nc.excluded_subtrees or ())
    for cert in below:
        for name in _sans(cert):
            for subtree in excluded:
                if _name_matches(name, subtree):
                    raise VerificationError(
                        f"name constraint violated: {name.value} of {_describe(cert)} is "
                        f"excluded by {_describe(ca)}"
                    )
            same_type = [s for s in permitted if _name_matches(name, s) is not None]
            if same_type and not any(_name_matches(name, s) for s in same_type):
                raise VerificationError(
                    f"name constraint violated: {name.value} of {_describe(cert)} is outside "
                    f"the names permitted by {_describe(ca)}"
                )


def _check_leaf(leaf: x509.Certificate, usage: Usage) -> str:
    """The leaf's one URI SAN, after the leaf's own checks."""
    bc = _extension(leaf, x509.BasicConstraints)
    if isinstance(bc, x509.BasicConstraints) and bc.ca:
        raise VerificationError(f"leaf certificate {_describe(leaf)} is a CA")
    ku = _extension(leaf, x509.KeyUsage)
    if not isinstance(ku, x509.KeyUsage) or not ku.digital_signature:
        raise VerificationError(f"leaf {_describe(leaf)} lacks keyUsage digitalSignature")
    if ku.key_cert_sign or ku.crl_sign:
        raise VerificationError(f"leaf {_describe(leaf)} has keyUsage keyCertSign or cRLSign")
    eku = _extension(leaf, x509.ExtendedKeyUsage)
    if not isinstance(eku, x509.ExtendedKeyUsage) or _USAGE_OID[usage] not in eku:
        raise VerificationError(
            f"leaf {_describe(leaf)} lacks extendedKeyUsage {usage}Auth needed for {usage} use"
        )
    uris = [n.value for n in _sans(leaf) if isinstance(n, x509.UniformResourceIdentifier)]
    if len(uris) != 1:
        raise VerificationError(
            f"leaf {_describe(leaf)} must have exactly one URI SAN (its SPIFFE ID), has {len(uris)}"
        )
    return uris[0]


def _identity(uri: str, trust_domain: str) -> tuple[SpiffeId, Identity]:
    try:
        sid = SpiffeId.parse(uri)
    except ValueError as exc:
        raise VerificationError(f"leaf URI SAN is not a valid SPIFFE ID: {exc}") from None
    if sid.trust_domain != trust_domain:
        raise VerificationError(f"{sid} is in trust domain {sid.trust_domain!r}, expected {trust_domain!r}")
    try:
        identity = classify(sid)
    except ValueError as exc:
        raise VerificationError(str(exc)) from None
    return sid, identity


def _check_issuer_rule(sid: SpiffeId, identity: Identity, path: tuple[x509.Certificate, ...]) -> str | None:
    """The issuing intermediate's zone, once the zone issuer rule holds."""
    by_root = len(path) == 2
    issuer_zone = None if by_root else zone_of_intermediate(path[1])
    if identity.role in ZONE_SCOPED_ROLES:
        if by_root:
            raise VerificationError(
                f"{sid} is scoped to zone {identity.zone!r} but was issued by the root CA "
                "directly; zone identities come from their zone's intermediate"
            )
        if issuer_zone != identity.zone:
            got = f"zone {issuer_zone!r}" if issuer_zone else "no zone"
            raise VerificationError(
                f"{sid} is scoped to zone {identity.zone!r} but its issuing intermediate names {got}"
            )
    if identity.role == "global-cp" and not by_root:
        raise VerificationError(f"{sid} must be issued by the root CA directly, not by an intermediate")
    return issuer_zone


def _check_path(
    path: tuple[x509.Certificate, ...], trust_domain: str, now: datetime, usage: Usage
) -> VerifiedPeer:
    for cert in path:
        _check_common(cert, now)
    for index in range(1, len(path)):
        _check_issuer(path[index], cas_below=index - 1, usage=usage)
        _check_name_constraints(path[index], path[:index])
    leaf = path[0]
    sid, identity = _identity(_check_leaf(leaf, usage), trust_domain)
    issuer_zone = _check_issuer_rule(sid, identity, path)
    return VerifiedPeer(sid, identity, leaf, issuer_zone, path)


def verify_peer(
    chain: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    *,
    trust_domain: str,
    now: datetime,
    usage: Usage,
) -> VerifiedPeer:
    """Verify ``chain`` (leaf first, then intermediates as sent) against ``roots``."""
    now = as_utc(now)
    validate_trust_domain(trust_domain)
    if usage not in _USAGE_OID:
        raise ValueError(f"usage must be 'client' or 'server', got {usage!r}")
    if not chain:
        raise VerificationError("the peer presented no certificate")
    if len(chain) > MAX_PRESENTED:
        raise VerificationError(f"the peer presented {len(chain)} certificates, too many")
    if not roots:
        raise VerificationError("no trusted roots configured")
    for position, cert in enumerate(chain):
        try:
            cert.extensions  # noqa: B018 - parsed lazily: fail here, with a clear message
        except ValueError as exc:
            raise VerificationError(
                f"certificate {position} of the chain has malformed extensions: {exc}"
            ) from None
    paths, reason = _paths(chain[0], list(chain[1:]), list(roots))
    if not paths:
        raise VerificationError(reason)
    first_error: VerificationError | None = None
    for path in paths:
        try:
            return _check_path(path, trust_domain, now, usage)
        except VerificationError as exc:
            first_error = first_error or exc
    assert first_error is not None
    raise first_error
