"""The two things Python 3.11's ``ssl`` cannot do, done through ctypes on the OpenSSL it uses:
restricting key-exchange groups, and reading the certificate chain a peer sent.

Safety: the symbols are looked up through the handle of the ``_ssl`` extension itself, so they
resolve to exactly the libssl/libcrypto ``_ssl`` is linked to; the library's version string must
equal ``ssl.OPENSSL_VERSION``. The ``SSL_CTX *`` is read from the ``PySSLContext`` object (CPython
lays it out as ``PyObject_HEAD`` then ``SSL_CTX *ctx``) and accepted only when OpenSSL reports the
same options for it as Python does; the ``SSL *`` is read from ``PySSLSocket`` (``PyObject_HEAD``,
``Socket``, ``ssl``, ``ctx``) only after its ``ctx`` field is checked to be the context object
Python reports, and its ``SSL_CTX`` to be that context's. Anything unexpected raises
``TlsConfigError``: nothing is silently skipped.
"""

from __future__ import annotations

import ctypes
import os
import ssl
import sys
from functools import cache
from typing import Any

SSL_CTRL_SET_GROUPS_LIST = 92
_OPENSSL_VERSION = 0  # OpenSSL_version(OPENSSL_VERSION)
_PTR = ctypes.sizeof(ctypes.c_void_p)
_HEAD = object.__basicsize__  # sizeof(PyObject): PyObject_HEAD


class TlsConfigError(RuntimeError):
    """The TLS context cannot be built with the required hardening."""


@cache
def _lib() -> Any:
    if sys.implementation.name != "cpython":
        raise TlsConfigError("restricting TLS groups needs CPython's _ssl module layout")
    import _ssl

    path = getattr(_ssl, "__file__", None)
    try:
        # RTLD_NOLOAD: reuse the copy already loaded, never load a second one.
        lib = ctypes.CDLL(path, mode=os.RTLD_NOLOAD) if path else ctypes.CDLL(None)
        version = lib.OpenSSL_version
        version.restype = ctypes.c_char_p
        version.argtypes = [ctypes.c_int]
        found = version(_OPENSSL_VERSION)
    except (OSError, AttributeError) as exc:
        raise TlsConfigError(f"cannot reach the OpenSSL that _ssl uses: {exc}") from exc
    if found is None or found.decode() != ssl.OPENSSL_VERSION:
        raise TlsConfigError(
            f"OpenSSL reached through _ssl reports {found!r}, Python reports "
            f"{ssl.OPENSSL_VERSION!r}; refusing to touch it"
        )
    if ssl.OPENSSL_VERSION_INFO < (1, 1, 1):
        raise TlsConfigError(f"{ssl.OPENSSL_VERSION} is too old (1.1.1 or later needed)")
    signatures: dict[str, tuple[Any, list[Any]]] = {
        "SSL_CTX_ctrl": (
            ctypes.c_long,
            [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p],
        ),
        "SSL_CTX_get_options": (ctypes.c_uint64, [ctypes.c_void_p]),
        "SSL_get_SSL_CTX": (ctypes.c_void_p, [ctypes.c_void_p]),
        "SSL_get_peer_cert_chain": (ctypes.c_void_p, [ctypes.c_void_p]),
        "OPENSSL_sk_num": (ctypes.c_int, [ctypes.c_void_p]),
        "OPENSSL_sk_value": (ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_int]),
        "i2d_X509": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_void_p]),
    }
    try:
        for name, (restype, argtypes) in signatures.items():
            func = getattr(lib, name)
            func.restype = restype
            func.argtypes = argtypes
    except AttributeError as exc:
        raise TlsConfigError(f"OpenSSL symbol missing: {exc}") from exc
    return lib


def _ctx_pointer(context: ssl.SSLContext) -> int:
    """The ``SSL_CTX *`` of ``context``, checked against the options Python reports."""
    if not isinstance(context, ssl.SSLContext):
        raise TlsConfigError("not an ssl.SSLContext")
    lib = _lib()
    pointer = ctypes.c_void_p.from_address(id(context) + _HEAD).value
    if not pointer:
        raise TlsConfigError("SSLContext has no SSL_CTX")
    if int(lib.SSL_CTX_get_options(pointer)) != int(context.options):
        raise TlsConfigError("SSLContext layout is not the expected one; refusing to use it")
    return int(pointer)


def set_groups(context: ssl.SSLContext, groups: str) -> None:
    """Restrict ``context`` to ``groups`` (``"X25519:P-256:P-384"``); OpenSSL's
    ``SSL_CTX_set1_groups_list``. Raises TlsConfigError if OpenSSL refuses the list."""
    pointer = _ctx_pointer(context)
    if _lib().SSL_CTX_ctrl(pointer, SSL_CTRL_SET_GROUPS_LIST, 0, groups.encode()) != 1:
        raise TlsConfigError(f"OpenSSL refused the group list {groups!r}")


def _ssl_pointer(sslobj: Any) -> int:
    """The ``SSL *`` of an ``_ssl._SSLSocket``, after checking the struct is laid out as assumed."""
    kind = type(sslobj)
    if (kind.__module__, kind.__qualname__) != ("_ssl", "_SSLSocket"):
        raise TlsConfigError(f"expected an _ssl._SSLSocket, got {kind.__qualname__}")
    ctx_field = ctypes.c_void_p.from_address(id(sslobj) + _HEAD + 2 * _PTR).value
    if ctx_field != id(sslobj.context):
        raise TlsConfigError("_ssl._SSLSocket layout is not the expected one")
    pointer = ctypes.c_void_p.from_address(id(sslobj) + _HEAD + _PTR).value
    if not pointer or _lib().SSL_get_SSL_CTX(pointer) != _ctx_pointer(sslobj.context):
        raise TlsConfigError("_ssl._SSLSocket does not hold the SSL of its context")
    return int(pointer)


def peer_chain_der(conn: ssl.SSLSocket | ssl.SSLObject) -> list[bytes]:
    """DER certificates the peer sent, leaf first; empty when it sent none.

    Unverified: pass them to ``verify_peer``. A resumed session may carry only the leaf
    (OpenSSL does not keep the chain in session tickets); ``verify_peer`` then fails closed
    unless the leaf was issued by a root directly.
    """
    leaf = conn.getpeercert(binary_form=True)
    if not leaf:
        return []
    getter = getattr(conn, "get_unverified_chain", None)  # Python 3.13+
    if getter is not None:
        chain = [bytes(c) for c in getter() or ()]
    else:
        if sys.version_info >= (3, 13):  # pragma: no cover - the public API exists there
            raise TlsConfigError("no way to read the peer chain")
        chain = _peer_chain_ctypes(getattr(conn, "_sslobj", None))
    if not chain or chain[0] != leaf:
        chain.insert(0, leaf)
    return chain


def _peer_chain_ctypes(sslobj: Any) -> list[bytes]:
    lib = _lib()
    stack = lib.SSL_get_peer_cert_chain(_ssl_pointer(sslobj))
    if not stack:
        return []
    result = []
    for index in range(int(lib.OPENSSL_sk_num(stack))):
        x509_ptr = lib.OPENSSL_sk_value(stack, index)
        size = int(lib.i2d_X509(x509_ptr, None))
        if size <= 0:
            raise TlsConfigError("cannot encode a peer certificate")
        buffer = ctypes.create_string_buffer(size)
        cursor = ctypes.c_void_p(ctypes.addressof(buffer))
        if int(lib.i2d_X509(x509_ptr, ctypes.byref(cursor))) != size:
            raise TlsConfigError("cannot encode a peer certificate")
        result.append(buffer.raw)
    return result
