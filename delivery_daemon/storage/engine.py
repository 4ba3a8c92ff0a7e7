"""Engine creation: SQLite tuned for durability (WAL, ``synchronous=FULL``, ``BEGIN IMMEDIATE``), or any URL
SQLAlchemy understands. :func:`create_db_engine` is the only place the package calls SQLAlchemy's
``create_engine``. Database errors are translated at the queue boundary, not here.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url

from delivery_daemon.config import DatabaseSettings
from delivery_daemon.errors import ConfigError
from delivery_daemon.storage.models import METADATA


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL; None for another database or an in-memory one."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def with_driver(url: str) -> str:
    """``url`` naming the driver this package installs: ``postgresql://`` (for which SQLAlchemy would load psycopg2,
    not a dependency) becomes ``postgresql+psycopg://``; any other URL is returned unchanged."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return url


def check_driver(url: str) -> None:
    """ConfigError, one line naming what to install, if the driver for ``url`` (after :func:`with_driver`) is not
    installed: psycopg is the ``postgres`` extra, not a default dependency. Imports the driver when it is there."""
    try:
        make_url(with_driver(url)).get_dialect().import_dbapi()
    except ModuleNotFoundError as exc:
        module = (exc.name or str(exc)).split(".")[0]
        if module == "psycopg":
            raise ConfigError(
                "database.url", "PostgreSQL needs the psycopg driver: pip install 'delivery-daemon[postgres]'"
            ) from None
        raise ConfigError("database.url", f"the database driver ({module}) is not installed") from None


def create_db_engine(
    database: DatabaseSettings | str,
    *,
    synchronous: str | None = None,
    busy_timeout_ms: int | None = None,
    read_only: bool = False,
) -> Engine:
    """An engine for the ``database`` section, or for a URL with that section's defaults: the one place engines are
    made (``postgresql://`` uses psycopg 3, see :func:`with_driver`). ``synchronous`` and ``busy_timeout_ms``
    override the section's (the benchmark measures ``synchronous=OFF``, which the config refuses).

    For a SQLite file, the file is created 0600 and every transaction is IMMEDIATE. With ``read_only`` (a check that
    reads while daemons write, e.g. a chaos run's verdict), SQLite transactions are DEFERRED, so the reader never
    takes the write lock, and ``PRAGMA query_only`` refuses any write; other databases are opened as usual.
    """
    # Not validated here: a malformed URL fails in SQLAlchemy's parser, as it always did.
    settings = DatabaseSettings.model_construct(url=database) if isinstance(database, str) else database
    synchronous = synchronous if synchronous is not None else settings.synchronous
    busy_timeout_ms = busy_timeout_ms if busy_timeout_ms is not None else settings.busy_timeout_ms
    url = with_driver(settings.url)
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            # Created by us first so that the file (which holds orders and keys) is never world-readable.
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    if make_url(url).get_backend_name() != "sqlite":
        check_driver(url)
        return create_engine(url, pool_pre_ping=True)

    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": busy_timeout_ms / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide when transactions begin (the documented SQLAlchemy recipe).
        dbapi_connection.isolation_level = None
        if read_only:  # a reader writes nothing, the journal mode included: that is the daemon's engines' to set
            pragmas = ["query_only=ON", f"busy_timeout={int(busy_timeout_ms)}"]
        else:
            pragmas = [
                "journal_mode=WAL",
                f"synchronous={synchronous}",
                f"busy_timeout={int(busy_timeout_ms)}",
                "foreign_keys=ON",
            ]
        cursor = dbapi_connection.cursor()
        for pragma in pragmas:
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # IMMEDIATE takes the write lock up front, so two writers never deadlock on a lock upgrade; a reader
        # takes no write lock at all.
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


def newest_revision() -> str:
    """The newest migration shipped (the revision no other one revises), read from the migration files' headers.

    Read without importing Alembic, whose import (with Mako and, through it, Pygments' lexers) costs ~10 MB of RSS
    for the daemon's whole life.
    """
    revisions: dict[str, str | None] = {}
    for path in (Path(__file__).parent / "migrations" / "versions").glob("[0-9]*.py"):
        header = path.read_text(encoding="utf-8")
        revision = re.search(r'^revision: str = "([^"]+)"', header, re.M)
        down = re.search(r'^down_revision: str \| None = (?:"([^"]+)"|None)', header, re.M)
        assert revision is not None and down is not None, f"unexpected migration header in {path.name}"
        revisions[revision.group(1)] = down.group(1)
    [head] = set(revisions) - set(revisions.values())
    return head


def _at_newest_revision(engine: Engine) -> bool:
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return False
        current = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    return current == [newest_revision()]


def create_schema(engine: Engine) -> None:
    """Bring the schema to the newest migration (an empty database, an older one, or a first-release one)."""
    if _at_newest_revision(engine):  # a restart: nothing to migrate, and Alembic stays unimported
        return
    if engine.dialect.name == "sqlite" and _create_fresh(engine):
        return
    from delivery_daemon.storage.schema import upgrade  # Alembic (~8 MB) only when there is something to migrate

    upgrade(engine)


def _create_fresh(engine: Engine) -> bool:
    """On a SQLite database without tables: create the models' tables and stamp the newest revision, in one
    transaction, without importing Alembic; False (nothing done) if the database has any table.

    The migrations, run from nothing, make exactly the models' schema on SQLite (tested table by table, index by
    index, in tests/storage/test_schema_migrations.py), so a new database needs none of them run; Alembic's import costs
    ~8 MB for the daemon's whole life. ``BEGIN IMMEDIATE`` serialises two processes starting on one new file: the
    second finds the tables and the stamp. PostgreSQL keeps the migrations (its NOTIFY trigger is one of them).
    """
    with engine.begin() as conn:
        if inspect(conn).get_table_names():
            return False
        METADATA.create_all(conn)
        # Alembic's own definition of its version table, so that a later release's upgrade reads it as usual.
        conn.exec_driver_sql(
            "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
            "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
        )
        conn.execute(
            text("INSERT INTO alembic_version (version_num) VALUES (:revision)"), {"revision": newest_revision()}
        )
    return True
