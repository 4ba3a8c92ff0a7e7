"""Copy every table of one database into another, empty one, in one transaction on the target, and verify it.

Every table the daemon declares (jobs with their stored content, attempts, and whatever tables later features
add to the same metadata, such as stock) is copied row for row, ids included. Before the target's transaction
commits, the row count of every table and the number of jobs in each state are compared with the source; any
difference rolls the whole copy back. The target must be empty (its schema is created by the migrations; existing
jobs make the copy refuse), so a copy is never merged into live data. ``delivery-daemon db migrate``
(:mod:`delivery_daemon.cli.migrate`) is its command.

The source is read inside one write-locking transaction (SQLite ``BEGIN IMMEDIATE``), so it is a consistent
snapshot and a daemon still running against it waits rather than writing orders the copy would miss.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, Engine, Integer, Table, func, insert, select
from sqlalchemy.exc import SQLAlchemyError

from delivery_daemon.errors import DeliveryDaemonError
from delivery_daemon.storage.jobs import JOBS
from delivery_daemon.storage.models import METADATA

BATCH = 1000


class MigrateError(DeliveryDaemonError):
    """The copy could not be made or did not verify; the target was left unchanged."""


@dataclass(frozen=True)
class CopyReport:
    """What was copied and verified: rows per table and jobs per state (identical on both sides)."""

    tables: dict[str, int]
    job_states: dict[str, int]


def _tables() -> list[Table]:
    # Parents before children (attempts references jobs), so foreign keys hold at every insert.
    return list(METADATA.sorted_tables)


def _census(conn: Connection, tables: list[Table]) -> tuple[dict[str, int], dict[str, int]]:
    counts = {table.name: int(conn.execute(select(func.count()).select_from(table)).scalar_one()) for table in tables}
    states = {
        str(state): int(n) for state, n in conn.execute(select(JOBS.c.state, func.count()).group_by(JOBS.c.state)).all()
    }
    return counts, states


def _copy_table(source: Connection, target: Connection, table: Table) -> None:
    result = source.execute(select(table).order_by(*table.primary_key.columns))
    while rows := result.fetchmany(BATCH):
        target.execute(insert(table), [dict(row._mapping) for row in rows])


def _reset_sequences(target: Connection, tables: list[Table]) -> None:
    """Ids were copied explicitly, so each serial sequence must continue after the largest one."""
    for table in tables:
        for column in table.primary_key.columns:
            if column.autoincrement is False or not isinstance(column.type, Integer):
                continue  # e.g. daemon_secrets, keyed by name: no sequence
            largest = select(func.coalesce(func.max(column), 0) + 1).scalar_subquery()
            sequence = func.pg_get_serial_sequence(table.name, column.name)
            target.execute(select(func.setval(sequence, largest, False)))


def copy_database(source_engine: Engine, target_engine: Engine) -> CopyReport:
    """Copy every table from ``source_engine`` into the empty ``target_engine`` and verify it (see module doc)."""
    # Alembic (~8 MB, ~0.3 s, and SQLAlchemy's PostgreSQL dialect) only when a copy runs: the CLI imports this module
    # to build its parser, and a SQLite daemon must not carry it (tests/storage/test_engine.py).
    from delivery_daemon.storage.schema import upgrade

    tables = _tables()
    try:
        upgrade(source_engine)
        upgrade(target_engine)
        with source_engine.begin() as source, target_engine.begin() as target:
            existing = target.execute(select(func.count()).select_from(JOBS)).scalar_one()
            if existing:
                raise MigrateError(
                    f"the target database already holds {existing} jobs; migrate only into an empty database"
                )
            for table in tables:
                _copy_table(source, target, table)
            _reset_sequences(target, tables)
            expected = _census(source, tables)
            copied = _census(target, tables)
            if copied != expected:
                raise MigrateError(f"verification failed, nothing was kept: source {expected}, copy {copied}")
    except SQLAlchemyError as exc:
        # The statement text and parameters may hold keys and tokens: name the failure only.
        raise MigrateError(f"database error during the copy ({type(exc).__name__}); the target is unchanged") from exc
    return CopyReport(tables=expected[0], job_states=expected[1])
