"""The database schema, managed by Alembic for SQLite and PostgreSQL alike: :func:`upgrade` brings any database
the daemon may meet to the newest revision.

Three starting points are handled: an empty database (every migration runs), a database of an earlier Alembic
revision (the missing ones run), and a database made by a release before Alembic, which created its tables with
``create_all`` and has no ``alembic_version`` table. Such a database is recognised by the tables it has
(:data:`RELEASE_SCHEMAS`): it is stamped at the newest revision whose migrations made exactly those tables — 0001
for the first release (``jobs``, ``attempts``), 0003 for the one that added ``webhook_events`` and ``stock_keys``
— and then upgraded. Migrations in between that create no tables (0002, PostgreSQL's NOTIFY trigger) still run
before the later stamp, so nothing they add is skipped.

Several replicas may start together against one PostgreSQL database: the upgrade runs in one transaction that
first takes a transaction-scoped advisory lock, so one replica migrates and the others wait, then find nothing to
do. (On SQLite, ``BEGIN IMMEDIATE`` already serialises writers.) PostgreSQL DDL is transactional, so a failed
migration leaves the database as it was.
"""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text

BASELINE = "0001"
"""The revision whose migration creates the tables exactly as the first release's ``create_all`` did."""

RELEASE_SCHEMAS: list[tuple[str, frozenset[str]]] = [
    (BASELINE, frozenset({"jobs", "attempts"})),
    ("0003", frozenset({"jobs", "attempts", "webhook_events", "stock_keys"})),
]
"""Oldest first: a revision, and the tables a pre-Alembic release's ``create_all`` made that the migrations up to
that revision create identically."""

MIGRATION_LOCK = 0x6464_6D69_6772  # "ddmigr": an arbitrary, fixed advisory-lock key shared by every replica


def alembic_config(connection: Connection | None = None) -> Config:
    """An in-memory Alembic configuration pointing at the packaged migrations (no alembic.ini)."""
    config = Config()
    config.set_main_option("script_location", "delivery_daemon.storage:migrations")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision shipped with this build."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at; None for an empty or a first-release database."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> None:
    """Bring the database to :func:`head_revision`, whatever it started as (see the module docstring)."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        config = alembic_config(conn)
        if MigrationContext.configure(conn).get_current_revision() is None and inspect(conn).has_table("jobs"):
            _adopt(conn, config)
        command.upgrade(config, "head")


def adopted_revision(tables: set[str]) -> str:
    """The revision a pre-Alembic database holding ``tables`` is stamped at (the newest whose tables it all has)."""
    revision = BASELINE
    for candidate, needed in RELEASE_SCHEMAS:
        if needed <= tables:
            revision = candidate
    return revision


def _adopt(conn: Connection, config: Config) -> None:
    """Stamp a database made by ``create_all`` at the revision its tables match, running table-less migrations."""
    target = adopted_revision(set(inspect(conn).get_table_names()))
    scripts = ScriptDirectory.from_config(config)
    command.stamp(config, BASELINE)
    for revision, _tables in RELEASE_SCHEMAS[1:]:
        if MigrationContext.configure(conn).get_current_revision() == target:
            break
        script = scripts.get_revision(revision)
        assert script is not None and isinstance(script.down_revision, str)
        previous = script.down_revision
        command.upgrade(config, previous)  # e.g. 0002: the NOTIFY trigger, no tables
        command.stamp(config, revision)
