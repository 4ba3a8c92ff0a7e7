"""The database half of a chaos run's verdict, per backend: is what the daemon left behind whole and consistent?

Both backends: the schema is at this build's migration head, one job per (store, order id), every attempt belongs
to a job, no stock key is in the pool twice, and the jobs per state. Then the backend's own check of its files:
SQLite's ``PRAGMA integrity_check``; on PostgreSQL the ``amcheck`` extension's ``bt_index_check`` on every B-tree
index of the daemon's tables when the extension can be created (it ships with PostgreSQL but creating it needs a
superuser; without it ``integrity`` says ``ok (amcheck unavailable)`` and the logical checks still run).

:func:`check_database` reads only (its SQL is :mod:`delivery_daemon.storage.integrity`'s); a chaos run calls it
once before it starts (through :func:`checked_database_url`: the database must be empty) and once after every daemon
has stopped.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from delivery_daemon.errors import ConfigError
from delivery_daemon.storage.engine import create_db_engine, sqlite_path, with_driver
from delivery_daemon.storage.integrity import consistency_problems, integrity, job_states
from delivery_daemon.storage.missed import open_missed
from delivery_daemon.storage.models import FINAL
from delivery_daemon.storage.schema import current_revision, head_revision


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
            report.states = job_states(conn)
            report.problems += consistency_problems(conn)
            report.integrity = integrity(conn)
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
            return sum(n for state, n in job_states(conn).items() if state not in FINAL)
    except SQLAlchemyError:
        return -1
    finally:
        engine.dispose()


def open_missed_orders(database: Path | str) -> set[str]:
    """The order ids the watchdog raised as missed that still have no job (read-only; none in a database that has
    no watchdog tables)."""
    engine = create_db_engine(database_url(database), read_only=True)
    try:
        if not inspect(engine).has_table("missed_orders"):
            return set()
        return {missed.order_id for missed in open_missed(engine, limit=1_000_000)}
    finally:
        engine.dispose()


async def wait_settled(database: Path | str, deadline: float) -> None:
    """Wait until the daemons have recorded every job as final: the marketplace's record can be ahead of theirs
    (a delivery accepted but answered late is still in flight), and stopping then would leave it running."""
    while time.monotonic() < deadline:
        if await asyncio.to_thread(unfinished_jobs, database) == 0:
            return
        await asyncio.sleep(0.1)


def checked_database_url(url: str | None, replicas: int, marketplace: str) -> str | None:
    """The run's database URL checked before anything starts: PostgreSQL only (psycopg 3), empty of orders, and
    required for more than one replica. Raises ConfigError naming the option."""
    if replicas < 1:
        raise ConfigError("--replicas", "must be at least 1")
    if marketplace != "softstore" and (url is not None or replicas > 1):
        raise ConfigError(
            "--database-url" if url is not None else "--replicas",
            "only with --marketplace softstore (the webhook-only runs use one daemon on SQLite)",
        )
    if url is None:
        if replicas > 1:
            raise ConfigError("--replicas", "several replicas share a PostgreSQL database: give --database-url")
        return None
    if not url.startswith(("postgresql://", "postgresql+psycopg://")):
        raise ConfigError(
            "--database-url",
            "must be a postgresql:// or postgresql+psycopg:// URL "
            "(without it the run uses a SQLite file in the work dir)",
        )
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
        raise ConfigError(
            "--database-url",
            f"{describe(url)} already holds orders; a run needs an empty database (its verdict counts every job in it)",
        )
    return url


def describe(database: Path | str) -> str:
    """The database for a log line: a SQLite path, or a PostgreSQL URL without its password."""
    if isinstance(database, Path) or sqlite_path(database_url(database)) is not None:
        return str(database)
    return make_url(database_url(database)).render_as_string(hide_password=True)


__all__ = [
    "DatabaseReport",
    "check_database",
    "checked_database_url",
    "database_url",
    "describe",
    "open_missed_orders",
]
