"""The key-encryption key (KEK) that global CP replicas share to encrypt secrets in the store.

The KEK file holds 32 random bytes as one line of base64, so it can be copied between hosts
(``head -c 32 /dev/urandom | base64 > kek && chmod 600 kek`` makes a valid one). It must not be
accessible to group or others. ``Kek.load_or_create`` is the only I/O of this module.

Ciphertext text form: ``mgkek1.<kek id>.<base64(nonce || AES-256-GCM ciphertext and tag)>``.
The associated data binds the format version, the KEK id and the ``purpose`` string, so a value
encrypted for one purpose (say ``root-ca-key``) cannot be decrypted as another.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import re
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
CIPHERTEXT_PREFIX = "mgkek1"
_MAX_FILE_BYTES = 1024
_KEK_ID = re.compile(r"[0-9a-f]{16}")
_PURPOSE = re.compile(r"[\x21-\x7e]{1,200}")


class KekError(Exception):
    """Base class of this module's errors."""


class KekFileError(KekError):
    """The KEK file is unsafe or malformed (the message names the path)."""


class KekMismatch(KekError):
    """Data was encrypted with another KEK (or altered, or for another purpose)."""


class MalformedCiphertext(KekError):
    """The text is not a ciphertext produced by ``Kek.encrypt``."""


def _kek_id(key: bytes) -> str:
    return hashlib.sha256(b"meshgate kek id v1\x00" + key).hexdigest()[:16]


def _check_purpose(purpose: str) -> bytes:
    if not isinstance(purpose, str) or _PURPOSE.fullmatch(purpose) is None:
        raise ValueError(f"purpose {purpose!r} must be 1-200 printable ASCII characters without spaces")
    return purpose.encode()


@dataclass(frozen=True)
class Kek:
    """A 256-bit AES-GCM key; ``source`` names where it came from, for error messages."""

    key: bytes = field(repr=False)
    source: str = "<memory>"
    id: str = field(init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.key, bytes) or len(self.key) != KEY_BYTES:
            raise ValueError(f"a KEK is exactly {KEY_BYTES} bytes")
        object.__setattr__(self, "id", _kek_id(self.key))

    @classmethod
    def generate(cls) -> Kek:
        """A random in-memory KEK (``load_or_create`` is how a deployment gets one)."""
        return cls(secrets.token_bytes(KEY_BYTES))

    @classmethod
    def load_or_create(cls, path: Path) -> Kek:
        """Load the KEK at ``path``, or create it (mode 0600, atomically) if it is absent.

        Raises KekFileError if the file is accessible to group or others, is not a regular file,
        or does not hold exactly 32 bytes of base64.
        """
        path = Path(path)
        try:
            return cls._load(path)
        except FileNotFoundError:
            pass
        cls._create(path)
        try:
            return cls._load(path)
        except FileNotFoundError:  # e.g. a dangling symlink in its place
            raise KekFileError(f"KEK file {path} could not be created") from None

    @classmethod
    def _load(cls, path: Path) -> Kek:
        try:
            # O_NONBLOCK: a FIFO in the KEK's place must not hang the start-up
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise KekFileError(f"cannot open KEK file {path}: {exc.strerror}") from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise KekFileError(f"KEK file {path} is not a regular file")
            if st.st_mode & 0o077:
                raise KekFileError(
                    f"KEK file {path} has mode {stat.S_IMODE(st.st_mode):04o}: it must not be "
                    f"accessible to group or others (chmod 600 {path})"
                )
            data = os.read(fd, _MAX_FILE_BYTES + 1)
        finally:
            os.close(fd)
        if len(data) > _MAX_FILE_BYTES:
            raise KekFileError(f"KEK file {path} is too large to be a KEK")
        try:
            key = base64.b64decode(data.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise KekFileError(f"KEK file {path} is malformed: it is not base64 text") from None
        if len(key) != KEY_BYTES:
            raise KekFileError(
                f"KEK file {path} is malformed: it holds {len(key)} bytes, a KEK is {KEY_BYTES}"
            )
        return cls(key, source=str(path))

    @staticmethod
    def _create(path: Path) -> None:
        text = base64.b64encode(secrets.token_bytes(KEY_BYTES)) + b"\n"
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), 0o600)  # whatever the umask
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            # link() never replaces: if another replica created the file meanwhile, keep theirs.
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _aad(self, purpose: bytes) -> bytes:
        return b"meshgate kek v1\x00" + self.id.encode() + b"\x00" + purpose

    def encrypt(self, plaintext: bytes, purpose: str) -> str:
        """AES-256-GCM with a random 96-bit nonce; returns ASCII text."""
        aad = self._aad(_check_purpose(purpose))
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = AESGCM(self.key).encrypt(nonce, plaintext, aad)
        return f"{CIPHERTEXT_PREFIX}.{self.id}.{base64.b64encode(nonce + sealed).decode()}"

    def decrypt(self, text: str, purpose: str) -> bytes:
        """The plaintext of ``text``; KekMismatch when this KEK did not encrypt it."""
        aad_purpose = _check_purpose(purpose)
        parts = text.split(".") if isinstance(text, str) else []
        if len(parts) != 3 or parts[0] != CIPHERTEXT_PREFIX or not _KEK_ID.fullmatch(parts[1]):
            raise MalformedCiphertext(f"not a {CIPHERTEXT_PREFIX} ciphertext")
        try:
            blob = base64.b64decode(parts[2], validate=True)
        except (binascii.Error, ValueError):
            raise MalformedCiphertext("ciphertext body is not base64") from None
        if len(blob) < NONCE_BYTES + TAG_BYTES:
            raise MalformedCiphertext("ciphertext is too short")
        if parts[1] != self.id:
            raise KekMismatch(
                f"the KEK file ({self.source}, KEK id {self.id}) does not match the key that "
                f"encrypted the data (KEK id {parts[1]}): copy the KEK file the other global CP "
                "replicas use"
            )
        try:
            return AESGCM(self.key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], self._aad(aad_purpose))
        except InvalidTag:
            raise KekMismatch(
                f"the KEK file ({self.source}, KEK id {self.id}) does not match the key that "
                f"encrypted the data, or the data was altered, or it was encrypted for another "
                f"purpose than {purpose!r}"
            ) from None
