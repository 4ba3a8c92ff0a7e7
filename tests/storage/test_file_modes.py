"""Files holding orders, keys or signing keys are created 0600 whatever the process umask.

Every writer the daemon has is exercised under a permissive umask (0o022, the common default, and 0o000): the
SQLite database with its ``-wal``/``-shm`` companions, the generated ``<database>.key``, ``db backup`` copies and
the Ed25519 signing key that ``keys generate`` writes for licence plugins.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from delivery_daemon.cli import main
from delivery_daemon.config import SecuritySettings
from delivery_daemon.storage.backup import backup
from delivery_daemon.storage.cipher import load_cipher
from delivery_daemon.storage.engine import create_db_engine, create_schema


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(params=[0o022, 0o000], ids=["umask022", "umask000"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def test_database_wal_shm_key_and_backup_are_0600(umask: int, tmp_path: Path) -> None:
    """A new database, its -wal/-shm, the generated key file and a backup copy are owner-only under any umask."""
    db = tmp_path / "data" / "orders.db"
    engine = create_db_engine(f"sqlite:///{db}")
    try:
        create_schema(engine)
        cipher = load_cipher(SecuritySettings(), db, environ={})
        assert cipher is not None
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE probe (x TEXT)"))
            conn.execute(text("INSERT INTO probe VALUES ('x')"))
        with engine.connect() as conn:  # holds the WAL and shared-memory files open while we look
            conn.execute(text("SELECT count(*) FROM probe")).scalar_one()
            files = [db, Path(f"{db}-wal"), Path(f"{db}-shm"), Path(f"{db}.key")]
            assert all(path.exists() for path in files), [p.name for p in files if not p.exists()]
            assert {p.name: _mode(p) for p in files} == {p.name: 0o600 for p in files}
            copy = backup(db, tmp_path / "orders-copy.db")
        assert _mode(copy.path) == 0o600
    finally:
        engine.dispose()
    assert not [p.name for p in tmp_path.rglob("*") if p.is_file() and _mode(p) & 0o077]


def test_cli_backup_and_signing_key_are_0600(umask: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`db backup` and `keys generate` (licence signing keys) write owner-only files under any umask."""
    db = tmp_path / "orders.db"
    engine = create_db_engine(f"sqlite:///{db}")
    create_schema(engine)
    engine.dispose()
    assert main(["db", "backup", str(tmp_path / "nightly.db"), "--database", f"sqlite:///{db}"]) == 0
    private, public = tmp_path / "signing.pem", tmp_path / "signing.pub"
    assert main(["keys", "generate", "--private-key", str(private), "--public-key", str(public)]) == 0
    capsys.readouterr()
    assert {p.name: _mode(p) for p in (db, tmp_path / "nightly.db", private)} == {
        "orders.db": 0o600,
        "nightly.db": 0o600,
        "signing.pem": 0o600,
    }
