"""Alembic-managed schema on SQLite and PostgreSQL: fresh databases, first-release databases, concurrent starts."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import (
    Column,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    insert,
    inspect,
    select,
    text,
)

from delivery_daemon.clock import ManualClock
from delivery_daemon.storage.cipher import Cipher, new_key_line, parse_keys
from delivery_daemon.storage.engine import create_db_engine, create_schema, newest_revision
from delivery_daemon.storage.models import ATTEMPTS, JOBS, METADATA
from delivery_daemon.storage.schema import (
    BASELINE,
    RELEASE_SCHEMAS,
    adopted_revision,
    alembic_config,
    current_revision,
    head_revision,
    upgrade,
)
from delivery_daemon.storage.stock_pool import KEYS, StockPool

LATER_JOB_COLUMNS = ("flag", "issue")
"""Columns of ``jobs`` that migrations after the last pre-Alembic release added (0005, 0006)."""
LATER_INDEXES = ("ix_attempts_step_outcome",)
"""Indexes that migrations after the last pre-Alembic release added (0008)."""


def previous_release_tables(engine: Engine) -> None:
    """Exactly what the last pre-Alembic release's ``create_all`` made: jobs (without :data:`LATER_JOB_COLUMNS`),
    attempts, webhook_events as today, and ``stock_keys`` with plaintext keys unique per (store, product_id, key) —
    frozen here (the model moved on)."""
    legacy = MetaData()
    for name in ("jobs", "attempts", "webhook_events"):
        METADATA.tables[name].to_metadata(legacy)
    Table(
        "stock_keys",
        legacy,
        Column("id", Integer, primary_key=True),
        Column("store", String(64), nullable=False),
        Column("product_id", String(128), nullable=False),
        Column("key", Text, nullable=False),
        Column("imported_at", Float, nullable=False),
        Column("claimed_by", String(256)),
        Column("claimed_at", Float),
        UniqueConstraint("store", "product_id", "key", name="uq_stock_keys_key"),
        Index("ix_stock_keys_free", "store", "product_id", "claimed_by"),
    )
    legacy.create_all(engine)
    drop_later_job_columns(engine)


def drop_later_job_columns(engine: Engine) -> None:
    """Take today's ``jobs`` back to what the pre-Alembic releases made (no :data:`LATER_JOB_COLUMNS`), and its
    history without :data:`LATER_INDEXES`."""
    with engine.begin() as conn:
        for column in LATER_JOB_COLUMNS:
            conn.execute(text(f"ALTER TABLE jobs DROP COLUMN {column}"))
        for index in LATER_INDEXES:
            conn.execute(text(f"DROP INDEX IF EXISTS {index}"))


def test_fresh_database_matches_the_models(db_url: str) -> None:
    """Upgrading an empty database yields exactly the tables models.py declares, at the head revision."""
    engine = create_db_engine(db_url)
    create_schema(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), METADATA)
    assert diff == []
    assert current_revision(engine) == head_revision()
    engine.dispose()


def _seed_job(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(JOBS).values(
                store="s",
                order_id="o1",
                marketplace="softstore",
                product_id="p",
                state="delivered",
                payload="{}",
                attempts=1,
                received=1,
                due_at=1.0,
                created_at=1.0,
                updated_at=1.0,
                content="KEY-1",
            )
        )


def _assert_upgraded_keeping_rows(engine: Engine) -> None:
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        assert conn.execute(select(JOBS.c.order_id, JOBS.c.content)).all() == [("o1", "KEY-1")]
        versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), METADATA)
        if conn.dialect.name == "postgresql":  # 0002's trigger ran even when a later revision was stamped
            triggers = conn.execute(text("SELECT tgname FROM pg_trigger WHERE tgname = 'jobs_notify_runnable'"))
            assert triggers.scalars().all() == ["jobs_notify_runnable"]
    assert versions == [head_revision()]
    assert diff == []


def test_previous_release_database_is_stamped_at_its_revision(db_url: str) -> None:
    """A database made by the previous release's create_all (every table, no alembic_version) is recognised by its
    tables, stamped at the revision that made them (not at 0001, whose later migrations would re-create tables),
    and ends at head with its rows."""
    engine = create_db_engine(db_url)
    previous_release_tables(engine)
    _seed_job(engine)
    assert current_revision(engine) is None
    assert adopted_revision(set(inspect(engine).get_table_names())) == RELEASE_SCHEMAS[-1][0] != BASELINE
    create_schema(engine)
    _assert_upgraded_keeping_rows(engine)
    engine.dispose()


def test_first_release_database_is_stamped_then_upgraded(db_url: str) -> None:
    """A database made by the first release (jobs and attempts only) is stamped at 0001 and gains the later
    tables from the migrations."""
    engine = create_db_engine(db_url)
    METADATA.create_all(engine, tables=[JOBS, ATTEMPTS])
    drop_later_job_columns(engine)
    _seed_job(engine)
    assert adopted_revision(set(inspect(engine).get_table_names())) == BASELINE
    create_schema(engine)
    _assert_upgraded_keeping_rows(engine)
    assert {"webhook_events", "stock_keys"} <= set(inspect(engine).get_table_names())
    assert head_revision() != BASELINE  # so the test really ran migrations after the stamp
    engine.dispose()


def test_previous_revision_with_plaintext_stock_upgrades_and_seals(db_url: str) -> None:
    """A database at 0003 holding plaintext stock keys upgrades to head keeping them (claimable, no key_hash yet);
    sealing then encrypts them, fills key_hash, and the new uniqueness de-duplicates them on import."""
    engine = create_db_engine(db_url)
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0003")
        conn.execute(
            text("INSERT INTO stock_keys (store, product_id, key, imported_at) VALUES ('s', 'p', :k, 1.0)"),
            [{"k": f"OLD-{i}"} for i in range(4)],
        )
    create_schema(engine)
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        assert conn.execute(select(KEYS.c.key, KEYS.c.key_hash).order_by(KEYS.c.id)).all() == [
            (f"OLD-{i}", None) for i in range(4)
        ]
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), METADATA)
    assert diff == []
    pool = StockPool(engine, ManualClock(), Cipher(parse_keys(new_key_line(), "test")))
    assert pool.claim("s", "p", "o1", 1) == ["OLD-0"]
    assert pool.seal() == 4
    with engine.connect() as conn:
        assert all(
            key.startswith("enc1:") and digest for key, digest in conn.execute(select(KEYS.c.key, KEYS.c.key_hash))
        )
    assert pool.import_keys("s", "p", ["OLD-1", "NEW-1"]).added == 1
    assert pool.claim("s", "p", "o1", 1) == ["OLD-0"] and pool.claim("s", "p", "o2", 2) == ["OLD-1", "OLD-2"]
    engine.dispose()


def test_upgrade_twice_is_a_no_op(db_url: str) -> None:
    """Restarting a daemon on an up-to-date database changes nothing."""
    engine = create_db_engine(db_url)
    create_schema(engine)
    create_schema(engine)
    assert set(inspect(engine).get_table_names()) == {table.name for table in METADATA.sorted_tables} | {
        "alembic_version"
    }
    engine.dispose()


@pytest.mark.postgres
def test_replicas_starting_together_migrate_once(pg_url: str) -> None:
    """Four replicas upgrading one empty PostgreSQL database at once all succeed (the advisory lock serialises)."""
    engines = [create_db_engine(pg_url) for _ in range(4)]
    errors: list[BaseException] = []

    def start(engine: Engine) -> None:
        try:
            create_schema(engine)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(engine,)) for engine in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert current_revision(engines[0]) == head_revision()
    for engine in engines:
        engine.dispose()


def test_newest_revision_read_from_the_files_is_alembics_head() -> None:
    """db.newest_revision() (read without Alembic) names the same head as Alembic's script directory."""
    assert newest_revision() == head_revision()


def test_restart_on_an_up_to_date_database_does_not_import_alembic(tmp_path: Path) -> None:
    """A second start on a migrated database skips Alembic entirely (its import costs idle memory)."""
    url = f"sqlite:///{tmp_path / 'd.db'}"
    engine = create_db_engine(url)
    create_schema(engine)
    engine.dispose()
    probe = (
        "import sys; from delivery_daemon.storage.engine import create_db_engine, create_schema, newest_revision; "
        f"create_schema(create_db_engine({url!r})); print('alembic' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def _schema(engine: Engine) -> dict[str, object]:
    """Every table's columns (with defaults), primary key, indexes, unique, check and foreign-key constraints, as
    SQLAlchemy reads them."""
    found: dict[str, object] = {}
    inspector = inspect(engine)
    for table in sorted(inspector.get_table_names()):
        found[table] = {
            # Sorted: a column a later migration adds comes last there, which nothing depends on (every statement
            # names its columns).
            "columns": sorted(
                (c["name"], str(c["type"]), c["nullable"], str(c["default"])) for c in inspector.get_columns(table)
            ),
            "checks": sorted(str(c["sqltext"]) for c in inspector.get_check_constraints(table)),
            "primary_key": inspector.get_pk_constraint(table)["constrained_columns"],
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in inspector.get_indexes(table)
            ),
            "unique": sorted(tuple(u["column_names"]) for u in inspector.get_unique_constraints(table)),
            "foreign_keys": sorted(
                (tuple(f["constrained_columns"]), f["referred_table"]) for f in inspector.get_foreign_keys(table)
            ),
        }
    return found


def test_new_sqlite_database_is_created_as_the_migrations_would_make_it(tmp_path: Path) -> None:
    """A new SQLite file gets its tables without Alembic (its import costs idle memory), stamped at the head, and
    the schema is the one running every migration from nothing makes, table by table and index by index."""
    fresh_url, migrated_url = f"sqlite:///{tmp_path / 'fresh.db'}", f"sqlite:///{tmp_path / 'migrated.db'}"
    probe = (
        "import sys; from delivery_daemon.storage.engine import create_db_engine, create_schema; "
        f"create_schema(create_db_engine({fresh_url!r})); print('alembic' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
    migrated = create_db_engine(migrated_url)
    upgrade(migrated)
    fresh = create_db_engine(fresh_url)
    try:
        assert _schema(fresh) == _schema(migrated)
        assert current_revision(fresh) == current_revision(migrated) == head_revision()
        upgrade(fresh)  # Alembic reads the stamp as its own: nothing to do, nothing changed
        assert _schema(fresh) == _schema(migrated)
    finally:
        fresh.dispose()
        migrated.dispose()


def test_database_at_0004_gains_a_null_job_flag_keeping_its_rows(db_url: str) -> None:
    """A database at 0004 (before jobs.flag) upgrades to head: its jobs keep their rows and get flag NULL."""
    engine = create_db_engine(db_url)
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0004")
    assert "flag" not in {column["name"] for column in inspect(engine).get_columns("jobs")}
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO jobs (store, order_id, marketplace, product_id, state, payload, attempts, "
                "received, due_at, created_at, updated_at, content) VALUES ('s', 'o1', 'softstore', 'p', "
                "'delivered', '{}', 1, 1, 1.0, 1.0, 1.0, 'KEY-1')"
            )
        )
    create_schema(engine)
    _assert_upgraded_keeping_rows(engine)
    with engine.connect() as conn:
        assert conn.execute(select(JOBS.c.flag)).scalars().all() == [None]
    engine.dispose()
