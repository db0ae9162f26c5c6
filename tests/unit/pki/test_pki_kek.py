from __future__ import annotations

import base64
import os
import re
import stat
from pathlib import Path

import pytest

from meshgate.pki.kek import Kek, KekFileError, KekMismatch, MalformedCiphertext


def test_creates_a_0600_base64_key_file_when_absent(tmp_path: Path) -> None:
    path = tmp_path / "kek"
    old_umask = os.umask(0)  # the file must be private whatever the umask
    try:
        kek = Kek.load_or_create(path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(base64.b64decode(path.read_text().strip(), validate=True)) == 32
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kek"]  # no temp file left behind
    assert re.fullmatch(r"[0-9a-f]{16}", kek.id)


def test_loads_the_same_key_on_the_next_start_and_on_a_copy(tmp_path: Path) -> None:
    first = Kek.load_or_create(tmp_path / "kek")
    secret = first.encrypt(b"root key", "root-ca-key")
    again = Kek.load_or_create(tmp_path / "kek")
    copy = tmp_path / "copied-kek"
    copy.write_bytes((tmp_path / "kek").read_bytes())
    copy.chmod(0o600)
    replica = Kek.load_or_create(copy)
    assert again.id == first.id == replica.id
    assert replica.decrypt(secret, "root-ca-key") == b"root key"


def test_a_replica_losing_the_creation_race_keeps_the_winners_key(tmp_path: Path) -> None:
    path = tmp_path / "kek"
    winner = Kek.load_or_create(path)
    before = path.read_bytes()
    Kek._create(path)  # what a second replica does after it found no file
    assert path.read_bytes() == before
    assert Kek.load_or_create(path).id == winner.id
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kek"]


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o602])
def test_refuses_a_key_file_open_to_group_or_others(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "kek"
    Kek.load_or_create(path)
    path.chmod(mode)
    with pytest.raises(KekFileError, match=re.escape(str(path))) as info:
        Kek.load_or_create(path)
    assert "group or others" in str(info.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not base64 at all!\n", "not base64"),
        (base64.b64encode(b"x" * 16) + b"\n", "holds 16 bytes"),
        (b"", "holds 0 bytes"),
    ],
)
def test_refuses_a_malformed_key_file(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "kek"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(KekFileError, match=re.escape(str(path))) as info:
        Kek.load_or_create(path)
    assert message in str(info.value)


def test_refuses_a_directory_in_place_of_the_key_file(tmp_path: Path) -> None:
    path = tmp_path / "kek"
    path.mkdir(mode=0o700)
    with pytest.raises(KekFileError, match="not a regular file"):
        Kek.load_or_create(path)


def test_encrypt_decrypt_round_trip_with_fresh_nonces() -> None:
    kek = Kek.generate()
    first = kek.encrypt(b"secret", "root-ca-key")
    second = kek.encrypt(b"secret", "root-ca-key")
    assert first != second
    assert first.isascii()
    assert b"secret" not in base64.b64decode(first.split(".")[2])
    assert kek.decrypt(first, "root-ca-key") == kek.decrypt(second, "root-ca-key") == b"secret"


def test_another_kek_file_is_reported_as_a_mismatch(tmp_path: Path) -> None:
    ours = Kek.load_or_create(tmp_path / "ours")
    theirs = Kek.load_or_create(tmp_path / "theirs")
    secret = theirs.encrypt(b"root key", "root-ca-key")
    with pytest.raises(KekMismatch, match="does not match the key that encrypted") as info:
        ours.decrypt(secret, "root-ca-key")
    assert str(tmp_path / "ours") in str(info.value)
    assert theirs.id in str(info.value)


def test_a_key_with_a_forged_id_still_fails_on_the_tag() -> None:
    ours, theirs = Kek.generate(), Kek.generate()
    forged = theirs.encrypt(b"data", "p").replace(theirs.id, ours.id)
    with pytest.raises(KekMismatch, match="does not match the key that encrypted"):
        ours.decrypt(forged, "p")


def test_purpose_is_bound() -> None:
    kek = Kek.generate()
    secret = kek.encrypt(b"token signing key", "join-token-key")
    with pytest.raises(KekMismatch, match="another purpose"):
        kek.decrypt(secret, "root-ca-key")


def test_tampered_ciphertext_is_refused() -> None:
    kek = Kek.generate()
    prefix, kid, body = kek.encrypt(b"secret value", "p").split(".")
    raw = bytearray(base64.b64decode(body))
    raw[-1] ^= 1
    with pytest.raises(KekMismatch):
        kek.decrypt(f"{prefix}.{kid}.{base64.b64encode(bytes(raw)).decode()}", "p")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello",
        "mgkek1.0123456789abcdef",
        "mgkek2.0123456789abcdef.AAAA",
        "mgkek1.xyz.AAAA",
        "mgkek1.0123456789abcdef.!!!!",
        "mgkek1.0123456789abcdef.AAAA",
    ],
)
def test_malformed_ciphertext(text: str) -> None:
    with pytest.raises(MalformedCiphertext):
        Kek.generate().decrypt(text, "p")


def test_key_is_not_in_repr() -> None:
    kek = Kek.generate()
    assert kek.key.hex() not in repr(kek)
    assert repr(kek.key) not in repr(kek)
