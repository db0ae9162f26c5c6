"""meshgate PKI: SPIFFE identities, the mesh CA hierarchy, peer verification, hardened TLS
contexts, the key-encryption key and join tokens. See README.md in this directory."""

from meshgate.pki.ca import (
    CertificateAuthority,
    create_root_ca,
    issue_intermediate,
    zone_of_intermediate,
)
from meshgate.pki.identities import (
    Identity,
    Role,
    classify,
    edge_id,
    global_cp_id,
    ingress_id,
    service_id,
    zone_cp_id,
)
from meshgate.pki.join_tokens import JoinTokenClaims, TokenError, new_signing_key
from meshgate.pki.join_tokens import key_id as join_token_key_id
from meshgate.pki.join_tokens import sign as sign_join_token
from meshgate.pki.join_tokens import verify as verify_join_token
from meshgate.pki.kek import Kek, KekError, KekFileError, KekMismatch, MalformedCiphertext
from meshgate.pki.keys import (
    certificate_from_pem,
    certificate_to_pem,
    certificates_from_pem,
    certificates_to_pem,
    csr_from_pem,
    csr_to_pem,
    fingerprint,
    make_csr,
    new_private_key,
    private_key_from_pem,
    private_key_to_pem,
)
from meshgate.pki.leaf import issue_leaf
from meshgate.pki.spiffe import SpiffeId
from meshgate.pki.tls import TlsConfigError, client_context, peer_certificates, server_context
from meshgate.pki.verify import VerificationError, VerifiedPeer, verify_peer

__all__ = [
    "CertificateAuthority",
    "Identity",
    "JoinTokenClaims",
    "Kek",
    "KekError",
    "KekFileError",
    "KekMismatch",
    "MalformedCiphertext",
    "Role",
    "SpiffeId",
    "TlsConfigError",
    "TokenError",
    "VerificationError",
    "VerifiedPeer",
    "certificate_from_pem",
    "certificate_to_pem",
    "certificates_from_pem",
    "certificates_to_pem",
    "classify",
    "client_context",
    "create_root_ca",
    "csr_from_pem",
    "csr_to_pem",
    "edge_id",
    "fingerprint",
    "global_cp_id",
    "ingress_id",
    "issue_intermediate",
    "issue_leaf",
    "join_token_key_id",
    "make_csr",
    "new_private_key",
    "new_signing_key",
    "peer_certificates",
    "private_key_from_pem",
    "private_key_to_pem",
    "server_context",
    "service_id",
    "sign_join_token",
    "verify_join_token",
    "verify_peer",
    "zone_cp_id",
    "zone_of_intermediate",
]
