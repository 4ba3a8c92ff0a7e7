"""``db backup``: a consistent copy of the SQLite database while the daemon keeps writing to it.

SQLite's online backup API (``sqlite3.Connection.backup``) copies the database page by page under a read
transaction; in WAL mode the daemon's writers are not blocked, and the copy is the database as of one moment.
The copy is written next to the target as ``FILE.partial`` (mode 0600: it holds keys and tokens), checked with
``PRAGMA integrity_check``, fsynced, and only then renamed to ``FILE`` — a crash never leaves a half backup there.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from delivery_daemon.errors import DeliveryDaemonError


class BackupError(DeliveryDaemonError):
    """The backup could not be made; nothing was left at the target path."""


@dataclass(frozen=True)
class BackupResult:
    path: Path
    size: int
    jobs: int


def backup(source: Path, target: Path, *, overwrite: bool = False) -> BackupResult:
    """Copy the SQLite database at ``source`` to ``target`` consistently, even while it is being written."""
    if target.exists() and not overwrite:
        raise BackupError(f"{target} exists (pass --force to replace it)")
    if target.resolve() == source.resolve():
        raise BackupError("the backup file must not be the database itself")
    partial = target.with_name(target.name + ".partial")
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()
    try:
        os.close(os.open(partial, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600))
        src = sqlite3.connect(source, timeout=30)
        try:
            dst = sqlite3.connect(partial)
            try:
                src.backup(dst)
                check = dst.execute("PRAGMA integrity_check").fetchone()[0]
                if check != "ok":
                    raise BackupError(f"the copy failed its integrity check: {check}")
                jobs = int(dst.execute("SELECT count(*) FROM jobs").fetchone()[0])
            finally:
                dst.close()
        finally:
            src.close()
        with open(partial, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(partial, target)
    except (sqlite3.Error, OSError) as exc:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise BackupError(f"backup failed: {exc}") from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise
    return BackupResult(path=target, size=target.stat().st_size, jobs=jobs)
