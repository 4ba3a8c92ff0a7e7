"""``delivery-daemon db migrate --to postgresql://…``: copy the daemon's SQLite database into PostgreSQL.

Every table the daemon declares (jobs with their stored content, attempts, and whatever tables later features
add to the same metadata, such as stock) is copied row for row, ids included, in one transaction on the target.
Before that transaction commits, the row count of every table and the number of jobs in each state are compared
with the source; any difference rolls the whole copy back. The target must be empty (its schema is created by the
migrations; existing jobs make the command refuse), so a copy is never merged into live data.

The source is read inside one write-locking transaction (SQLite ``BEGIN IMMEDIATE``), so it is a consistent
snapshot and a daemon still running against it waits rather than writing orders the copy would miss — but the
daemon must be stopped for the switch-over anyway (see docs/scaling.md).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Integer, Table, func, insert, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlmodel import SQLModel

from delivery_daemon.config import load_settings
from delivery_daemon.errors import DeliveryDaemonError
from delivery_daemon.storage.engine import create_db_engine, sqlite_path, with_driver
from delivery_daemon.storage.models import Job
from delivery_daemon.storage.schema import upgrade

BATCH = 1000

JOBS: Table = Job.__table__  # type: ignore[attr-defined]


class MigrateError(DeliveryDaemonError):
    """The copy could not be made or did not verify; the target was left unchanged."""


@dataclass(frozen=True)
class CopyReport:
    """What was copied and verified: rows per table and jobs per state (identical on both sides)."""

    tables: dict[str, int]
    job_states: dict[str, int]


def target_url(raw: str) -> str:
    """A SQLAlchemy URL for ``raw``: ``postgresql://`` gets the psycopg driver; anything not PostgreSQL is refused."""
    try:
        url = make_url(raw)
    except ArgumentError:
        raise MigrateError("--to: not a database URL (expected postgresql://user:password@host/dbname)") from None
    if url.get_backend_name() != "postgresql":
        raise MigrateError(f"--to: the target must be a PostgreSQL URL, not {url.get_backend_name()}")
    return with_driver(raw)


def _tables() -> list[Table]:
    # Parents before children (attempts references jobs), so foreign keys hold at every insert.
    return list(SQLModel.metadata.sorted_tables)


def _census(conn: Connection, tables: list[Table]) -> tuple[dict[str, int], dict[str, int]]:
    counts = {table.name: int(conn.execute(select(func.count()).select_from(table)).scalar_one())
              for table in tables}
    states = {str(state): int(n) for state, n in conn.execute(
        select(JOBS.c.state, func.count()).group_by(JOBS.c.state)).all()}
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
    tables = _tables()
    try:
        upgrade(source_engine)
        upgrade(target_engine)
        with source_engine.begin() as source, target_engine.begin() as target:
            existing = target.execute(select(func.count()).select_from(JOBS)).scalar_one()
            if existing:
                raise MigrateError(f"the target database already holds {existing} jobs; "
                                   "migrate only into an empty database")
            for table in tables:
                _copy_table(source, target, table)
            _reset_sequences(target, tables)
            expected = _census(source, tables)
            copied = _census(target, tables)
            if copied != expected:
                raise MigrateError(f"verification failed, nothing was kept: source {expected}, copy {copied}")
    except SQLAlchemyError as exc:
        # The statement text and parameters may hold keys and tokens: name the failure only.
        raise MigrateError(f"database error during the copy ({type(exc).__name__}); the target is unchanged"
                           ) from exc
    return CopyReport(tables=expected[0], job_states=expected[1])


def cmd_db_migrate(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    try:
        url = target_url(args.to)
    except MigrateError as exc:
        print(f"delivery-daemon: error: {exc}", file=sys.stderr)
        return 2
    shown = make_url(url).render_as_string(hide_password=True)
    source_engine = create_db_engine(settings.database)
    target_engine = create_db_engine(url)
    try:
        report = copy_database(source_engine, target_engine)
    except MigrateError as exc:
        print(f"delivery-daemon: error: {exc}", file=sys.stderr)
        return 1
    finally:
        source_engine.dispose()
        target_engine.dispose()
    print(f"copied into {shown} and verified:")
    for name, count in report.tables.items():
        print(f"  {name}: {count} rows")
    print("  jobs by state: " + (", ".join(f"{s} {n}" for s, n in sorted(report.job_states.items())) or "none"))
    key_file = generated_key_file(settings)
    if key_file is not None:
        # Payloads and content were copied still encrypted with the key generated next to the SQLite file; a
        # PostgreSQL database has no such file, so without this setting they could not be read.
        print(f"next: set security.encryption_key_file to {key_file} (the copied orders are encrypted with it)")
    print(f"next: set database.url to {shown} (password included) and start the daemon")
    return 0


def generated_key_file(settings: Any) -> Path | None:
    """The key file the daemon generated next to the SQLite database, if no key is configured and it exists."""
    security = settings.security
    if security.encryption_key_env or security.encryption_key_file:
        return None
    database = sqlite_path(settings.database.url)
    if database is None:
        return None
    key = database.with_name(database.name + ".key")
    return key.resolve() if key.exists() else None


def _subparsers(parser: argparse.ArgumentParser) -> Any:
    # argparse has no public way to reach an existing parser's sub-commands; this is its documented structure.
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return parser.add_subparsers(dest="db_command", required=True)


def register_db_migrate(sub: Any) -> None:
    """Add ``db migrate`` under the ``db`` command, creating ``db`` only if another feature has not already."""
    db = sub.choices.get("db") or sub.add_parser("db", help="database maintenance")
    migrate = _subparsers(db).add_parser(
        "migrate", help="copy the configured SQLite database into an empty PostgreSQL database and verify it")
    migrate.add_argument("--config", required=True)
    migrate.add_argument("--to", required=True, metavar="URL", help="postgresql://user:password@host:port/dbname")
    migrate.set_defaults(func=cmd_db_migrate)
