"""Secrets at rest: the database, its WAL and the key file are 0600; a copied database reveals no key or token."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from delivery_daemon.config import SecuritySettings
from delivery_daemon.errors import ConfigError
from delivery_daemon.storage.cipher import Cipher, DecryptError, create_key_file, load_cipher, new_key_line, parse_keys
from tests.support.stack import PRODUCT, Stack


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _cipher(*lines: str) -> Cipher:
    return Cipher(parse_keys("\n".join(lines), "test"))


async def test_copied_database_reveals_no_key_or_token(stack: Stack) -> None:
    """After deliveries, neither the database file nor its WAL contains a generated key or a delivery token."""
    placed = [await stack.market.place_order(PRODUCT, 2) for _ in range(3)]
    await stack.drain()
    texts = [stack.market.accepted(p.id_order).json["text"] for p in placed]  # type: ignore[union-attr]  # all were delivered
    keys = [line for text in texts for line in text.splitlines()[1:]]
    assert len(keys) == 6
    db = Path(stack.settings.database.url.removeprefix("sqlite:///"))
    raw = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*") if not p.name.endswith(".key"))
    for secret in [*keys, *(p.token for p in placed)]:
        assert secret.encode() not in raw
    job = await stack.job(placed[0].id_order)
    assert job.content is not None and keys[0] in job.content  # plaintext again once read through the queue


async def test_database_wal_and_key_file_are_0600(stack: Stack) -> None:
    """The database, its -wal/-shm companions and the generated key file are readable by the owner only."""
    await stack.market.place_order(PRODUCT, 1)
    await stack.drain()
    db = Path(stack.settings.database.url.removeprefix("sqlite:///"))
    files = [db, Path(f"{db}-wal"), Path(f"{db}-shm"), Path(f"{db}.key")]
    assert all(path.exists() for path in files)
    assert {path.name: _mode(path) for path in files} == {path.name: 0o600 for path in files}


def test_rotation_reads_old_values_and_writes_with_the_new_key() -> None:
    """With a new key first and the old one after it, old rows open and new rows use the new key only."""
    old, new = new_key_line(), new_key_line()
    sealed_old = _cipher(old).seal("KEY-1", "shop/o1/content")
    rotated = _cipher(new, old)
    assert rotated.open(sealed_old, "shop/o1/content") == "KEY-1"
    sealed_new = rotated.seal("KEY-2", "shop/o2/content")
    assert sealed_new.startswith(f"enc1:{new.split(':')[0]}:")
    assert _cipher(new).open(sealed_new, "shop/o2/content") == "KEY-2"
    with pytest.raises(DecryptError, match="not configured"):
        _cipher(new).open(sealed_old, "shop/o1/content")


def test_ciphertext_moved_to_another_row_does_not_open() -> None:
    """The row identity is bound in: one order's sealed keys copied onto another order fail to decrypt."""
    cipher = _cipher(new_key_line())
    sealed = cipher.seal("KEY-1", "shop/o1/content")
    with pytest.raises(DecryptError, match="tampered or moved"):
        cipher.open(sealed, "shop/o2/content")
    assert cipher.open("legacy plaintext", "shop/o1/content") == "legacy plaintext"


def test_key_sources_and_their_errors(tmp_path: Path) -> None:
    """Env var first, then file; a world-readable key file or a malformed key is a one-line ConfigError."""
    line = new_key_line()
    from_env = load_cipher(SecuritySettings(encryption_key_env="DD_KEYS"), None, environ={"DD_KEYS": line})
    assert from_env is not None and from_env.current == line.split(":")[0]
    with pytest.raises(ConfigError, match=r"^security.encryption_key_env: environment variable DD_KEYS is not set"):
        load_cipher(SecuritySettings(encryption_key_env="DD_KEYS"), None, environ={})
    key_file = tmp_path / "keys"
    create_key_file(key_file)
    assert _mode(key_file) == 0o600
    assert load_cipher(SecuritySettings(encryption_key_file=str(key_file)), None, environ={}) is not None
    os.chmod(key_file, 0o644)
    with pytest.raises(ConfigError, match="readable by other users"):
        load_cipher(SecuritySettings(encryption_key_file=str(key_file)), None, environ={})
    with pytest.raises(ConfigError, match="base64url of 32 bytes"):
        parse_keys("k1:tooshort", "security.encryption_key_env")


def test_generated_key_file_is_kept_across_starts(tmp_path: Path) -> None:
    """Without configuration a key file is generated once next to the database and reused afterwards."""
    db = tmp_path / "d.db"
    first = load_cipher(SecuritySettings(), db, environ={})
    second = load_cipher(SecuritySettings(), db, environ={})
    assert first is not None and second is not None and first.current == second.current
    assert _mode(tmp_path / "d.db.key") == 0o600
