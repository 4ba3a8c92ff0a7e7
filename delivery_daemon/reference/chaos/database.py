"""The database half of a chaos run's verdict, per backend: is what the daemon left behind whole and consistent?

Both backends: the schema is at this build's migration head, one job per (store, order id), every attempt belongs
to a job, no stock key is in the pool twice, and the jobs per state. Then the backend's own check of its files:
SQLite's ``PRAGMA integrity_check``; on PostgreSQL the ``amcheck`` extension's ``bt_index_check`` on every B-tree
index of the daemon's tables when the extension can be created (it ships with PostgreSQL but creating it needs a
superuser; without it ``integrity`` says ``ok (amcheck unavailable)`` and the logical checks still run).

:func:`check_database` reads only; a chaos run calls it once before it starts (through
:func:`checked_database_url`: the database must be empty) and once after every daemon has stopped.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from delivery_daemon.errors import ConfigError
from delivery_daemon.storage.engine import create_db_engine, sqlite_path, with_driver
from delivery_daemon.storage.models import FINAL
from delivery_daemon.storage.schema import current_revision, head_revision

DUPLICATE_JOBS = "SELECT count(*) FROM (SELECT 1 FROM jobs GROUP BY store, order_id HAVING count(*) > 1) AS d"
ORPHAN_ATTEMPTS = "SELECT count(*) FROM attempts WHERE job_id NOT IN (SELECT id FROM jobs)"
# Keys are sealed at rest (random nonce): their HMAC is what repeats when a key is in the pool twice.
DUPLICATE_STOCK = ("SELECT count(*) FROM (SELECT 1 FROM stock_keys WHERE key_hash IS NOT NULL "
                   "GROUP BY store, product_id, key_hash HAVING count(*) > 1) AS d")
STATES = "SELECT state, count(*) FROM jobs GROUP BY state"
BTREE_INDEXES = """
    SELECT c.oid::regclass::text FROM pg_index i
    JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam
    JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace
    WHERE a.amname = 'btree' AND n.nspname = current_schema() AND c.relpersistence = 'p'
    ORDER BY 1"""


@dataclass
class DatabaseReport:
    """What the checks found; ``problems`` is empty when the database is whole."""

    backend: str
    integrity: str = "?"
    states: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def database_url(database: Path | str) -> str:
    """A SQLAlchemy URL for a SQLite file path or an URL (``postgresql://`` is read with psycopg 3)."""
    if isinstance(database, Path):
        return f"sqlite:///{database}"
    return with_driver(database)


def check_database(database: Path | str) -> DatabaseReport:
    """Run every check on ``database`` (a SQLite file or a SQLAlchemy URL); errors become problems, not raises."""
    url = database_url(database)
    engine = create_db_engine(url, read_only=True)
    report = DatabaseReport(backend=engine.dialect.name)
    try:
        at, head = current_revision(engine), head_revision()
        if at != head:
            report.problems.append(f"schema at revision {at}, not at this build's head {head}")
        with engine.connect() as conn:
            report.states = {str(state): int(count) for state, count in conn.execute(text(STATES)).all()}
            for what, sql in (("jobs share a (store, order id)", DUPLICATE_JOBS),
                              ("attempts belong to no job", ORPHAN_ATTEMPTS),
                              ("stock keys are in the pool twice", DUPLICATE_STOCK)):
                count = int(conn.execute(text(sql)).scalar_one())
                if count:
                    report.problems.append(f"{count} {what}")
            report.integrity = _integrity(conn) if report.backend == "postgresql" else _sqlite_integrity(conn)
    except SQLAlchemyError as exc:
        report.problems.append(f"database check failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    finally:
        engine.dispose()
    if not report.integrity.startswith("ok"):
        report.problems.append(f"integrity check: {report.integrity}")
    return report


def unfinished_jobs(database: Path | str) -> int:
    """Jobs not yet in a final state (read-only; a database error counts as unsettled)."""
    engine = create_db_engine(database_url(database), read_only=True)  # polled while the daemons write
    try:
        with engine.connect() as conn:
            return sum(int(n) for state, n in conn.execute(text(STATES)).all() if state not in FINAL)
    except SQLAlchemyError:
        return -1
    finally:
        engine.dispose()


async def wait_settled(database: Path | str, deadline: float) -> None:
    """Wait until the daemons have recorded every job as final: the marketplace's record can be ahead of theirs
    (a delivery accepted but answered late is still in flight), and stopping then would leave it running."""
    while time.monotonic() < deadline:
        if await asyncio.to_thread(unfinished_jobs, database) == 0:
            return
        await asyncio.sleep(0.1)


def _sqlite_integrity(conn: Connection) -> str:
    return str(conn.execute(text("PRAGMA integrity_check")).scalar_one())


def _integrity(conn: Connection) -> str:
    """``ok`` when ``bt_index_check`` passes on every index; ``ok (amcheck unavailable)`` when it cannot run."""
    try:
        with conn.begin_nested():
            conn.execute(text("CREATE EXTENSION IF NOT EXISTS amcheck"))
    except SQLAlchemyError:
        return "ok (amcheck unavailable)"
    indexes = conn.execute(text(BTREE_INDEXES)).scalars().all()
    broken: list[str] = []
    for index in indexes:
        try:
            with conn.begin_nested():
                conn.execute(text("SELECT bt_index_check(CAST(:index AS regclass), true)"), {"index": index})
        except SQLAlchemyError as exc:
            broken.append(f"{index}: {str(getattr(exc, 'orig', None) or exc).splitlines()[0][:120]}")
    return f"ok (amcheck: {len(indexes)} indexes)" if not broken else "; ".join(broken)


def checked_database_url(url: str | None, replicas: int, marketplace: str) -> str | None:
    """The run's database URL checked before anything starts: PostgreSQL only (psycopg 3), empty of orders, and
    required for more than one replica. Raises ConfigError naming the option."""
    if replicas < 1:
        raise ConfigError("--replicas", "must be at least 1")
    if marketplace != "softstore" and (url is not None or replicas > 1):
        raise ConfigError("--database-url" if url is not None else "--replicas",
                          "only with --marketplace softstore (the webhook-only runs use one daemon on SQLite)")
    if url is None:
        if replicas > 1:
            raise ConfigError("--replicas", "several replicas share a PostgreSQL database: give --database-url")
        return None
    if not url.startswith(("postgresql://", "postgresql+psycopg://")):
        raise ConfigError("--database-url", "must be a postgresql:// or postgresql+psycopg:// URL "
                                            "(without it the run uses a SQLite file in the work dir)")
    url = database_url(url)
    engine = create_db_engine(url, read_only=True)
    try:
        empty = current_revision(engine) is None  # no schema yet: the first daemon creates it
    except SQLAlchemyError as exc:
        raise ConfigError("--database-url", f"cannot use {describe(url)}: {type(exc).__name__}") from None
    finally:
        engine.dispose()
    if empty:
        return url
    report = check_database(url)
    if report.problems:
        raise ConfigError("--database-url", f"cannot use {describe(url)}: {report.problems[0]}")
    if sum(report.states.values()):
        raise ConfigError("--database-url", f"{describe(url)} already holds orders; a run needs an empty database "
                                            "(its verdict counts every job in it)")
    return url


def describe(database: Path | str) -> str:
    """The database for a log line: a SQLite path, or a PostgreSQL URL without its password."""
    if isinstance(database, Path) or sqlite_path(database_url(database)) is not None:
        return str(database)
    return make_url(database_url(database)).render_as_string(hide_password=True)


__all__ = ["DatabaseReport", "check_database", "checked_database_url", "database_url", "describe"]
