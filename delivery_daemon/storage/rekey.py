"""Re-sealing what is stored under the current encryption key, and compacting the database afterwards.

Two callers: the daemon's start (:func:`seal_at_start`: legacy plaintext stock rows are sealed, then a SQLite file is
compacted so the freed plaintext pages are gone) and ``delivery-daemon db reencrypt`` (:func:`reencrypt`: after a key
rotation, every job payload and content, every stock key and every daemon secret not sealed under the current key is
re-sealed, so the old key can be removed). Both work in batches of short transactions, so a running daemon is only
held up for one batch at a time; each row is read and rewritten inside one transaction (``BEGIN IMMEDIATE`` on
SQLite, ``FOR UPDATE`` on PostgreSQL), so a concurrent delivery never loses its write.

Compaction (SQLite ``VACUUM`` then a truncating WAL checkpoint; PostgreSQL ``VACUUM FULL`` of the tables holding
secrets, only on request) rewrites the file: pages that held plaintext before sealing are not left behind in the
free list or the WAL. If it cannot run (the database is busy, the disk is full) ``security.compact_failed`` is
logged and the caller continues: the data is sealed either way, only old pages may remain until the next compaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import Connection, Engine, and_, or_, text, update
from sqlalchemy.exc import SQLAlchemyError

from delivery_daemon.clock import Clock
from delivery_daemon.errors import DeliveryDaemonError
from delivery_daemon.storage.batches import rewrite_in_batches
from delivery_daemon.storage.cipher import PREFIX, Cipher
from delivery_daemon.storage.jobs import SEALED
from delivery_daemon.storage.models import Job, table_of
from delivery_daemon.storage.retention import EMPTY_PAYLOAD
from delivery_daemon.storage.stock_pool import SEAL_BATCH, StockPool
from delivery_daemon.storage.vault import reseal_all

log = structlog.get_logger("delivery_daemon.storage.rekey")

JOBS = table_of(Job)
SECRET_TABLES = ("jobs", "stock_keys", "daemon_secrets")


class RekeyError(DeliveryDaemonError):
    """Re-sealing stopped (a database error, or a value no configured key opens); rows done so far stay done."""


@dataclass(frozen=True)
class RekeyReport:
    """Rows rewritten under the current key, per kind."""

    jobs: int
    stock_keys: int
    secrets: int


def compact(engine: Engine) -> bool:
    """Rewrite the database file so that freed pages are gone (see the module doc); False, logged, on failure."""
    try:
        if engine.dialect.name == "sqlite":
            raw = engine.raw_connection()
            try:
                driver = raw.driver_connection
                assert driver is not None
                driver.execute("VACUUM")  # outside any transaction: the connection is in autocommit mode
                busy = driver.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                if busy is not None and busy[0]:
                    raise SQLAlchemyError("the WAL could not be checkpointed: a reader holds it")
            finally:
                raw.close()
        elif engine.dialect.name == "postgresql":
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text(f"VACUUM FULL {', '.join(SECRET_TABLES)}"))
        else:
            return False
    except Exception as exc:  # any driver error: compaction is best effort by contract
        log.warning("security.compact_failed", error=type(exc).__name__)
        return False
    log.info("security.compacted", database=engine.dialect.name)
    return True


def seal_at_start(engine: Engine, clock: Clock, cipher: Cipher | None) -> int:
    """Seal stock rows an earlier release stored in plaintext; compact a SQLite file if any were. Returns the count.

    Raises :class:`~delivery_daemon.storage.stock_pool.StockError` if a stored value does not open with the
    configured keys."""
    sealed = StockPool(engine, clock, cipher).seal()
    if sealed and engine.dialect.name == "sqlite":
        compact(engine)
    return sealed


def _reseal_jobs(engine: Engine, cipher: Cipher, batch: int) -> int:
    current = f"{PREFIX}:{cipher.current}:"
    columns = [JOBS.c[name] for name in SEALED]
    stale = or_(
        *(
            and_(column.is_not(None), column != EMPTY_PAYLOAD, ~column.startswith(current, autoescape=True))
            for column in columns
        )
    )

    def reseal(conn: Connection, rows: Sequence[Any]) -> None:
        for row in rows:
            values = {}
            for name in SEALED:
                value = row._mapping[name]
                if value is None or value == EMPTY_PAYLOAD or value.startswith(current):
                    continue
                context = f"{row.store}/{row.order_id}/{name}"
                values[name] = cipher.seal(cipher.open(value, context), context)
            conn.execute(update(JOBS).where(JOBS.c.id == row.id).values(**values))

    return rewrite_in_batches(engine, JOBS, [JOBS.c.store, JOBS.c.order_id, *columns], stale, batch, reseal)


def reencrypt(engine: Engine, clock: Clock, cipher: Cipher, *, batch: int = SEAL_BATCH) -> RekeyReport:
    """Re-seal every stored secret not sealed under ``cipher``'s current key (plaintext included)."""
    try:
        with engine.begin() as conn:
            secrets = reseal_all(conn, cipher)  # first: stock sealing below opens the hash key
        stock = StockPool(engine, clock, cipher).seal(rotate=True, batch=batch)
        jobs = _reseal_jobs(engine, cipher, batch)
    except SQLAlchemyError as exc:
        raise RekeyError(f"database error: {type(exc).__name__}") from exc
    except DeliveryDaemonError as exc:
        raise RekeyError(str(exc)) from None
    return RekeyReport(jobs=jobs, stock_keys=stock, secrets=secrets)


__all__ = ["RekeyError", "RekeyReport", "compact", "reencrypt", "seal_at_start"]
