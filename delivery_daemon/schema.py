"""The database schema, managed by Alembic for SQLite and PostgreSQL alike: :func:`upgrade` brings any database
the daemon may meet to the newest revision.

Three starting points are handled: an empty database (every migration runs), a database of an earlier Alembic
revision (the missing ones run), and a database made by the first release, which created its tables with
``create_all`` and has no ``alembic_version`` table (it is stamped at :data:`BASELINE` — whose migration made
exactly those tables — and then upgraded).

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

MIGRATION_LOCK = 0x6464_6D69_6772  # "ddmigr": an arbitrary, fixed advisory-lock key shared by every replica


def alembic_config(connection: Connection | None = None) -> Config:
    """An in-memory Alembic configuration pointing at the packaged migrations (no alembic.ini)."""
    config = Config()
    config.set_main_option("script_location", "delivery_daemon:migrations")
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
            command.stamp(config, BASELINE)
        command.upgrade(config, "head")
