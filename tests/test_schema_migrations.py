"""Alembic-managed schema on SQLite and PostgreSQL: fresh databases, first-release databases, concurrent starts."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, insert, inspect, select, text
from sqlmodel import SQLModel

from delivery_daemon.db import create_db_engine, create_schema, newest_revision
from delivery_daemon.models import Attempt, Job
from delivery_daemon.schema import BASELINE, RELEASE_SCHEMAS, adopted_revision, current_revision, head_revision

JOBS = Job.__table__  # type: ignore[attr-defined]


def test_fresh_database_matches_the_models(db_url: str) -> None:
    """Upgrading an empty database yields exactly the tables models.py declares, at the head revision."""
    engine = create_db_engine(db_url)
    create_schema(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), SQLModel.metadata)
    assert diff == []
    assert current_revision(engine) == head_revision()
    engine.dispose()


def _seed_job(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(insert(JOBS).values(store="s", order_id="o1", marketplace="softstore", product_id="p",
                                         state="delivered", payload="{}", attempts=1, received=1, due_at=1.0,
                                         created_at=1.0, updated_at=1.0, content="KEY-1"))


def _assert_upgraded_keeping_rows(engine: Engine) -> None:
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        assert conn.execute(select(JOBS.c.order_id, JOBS.c.content)).all() == [("o1", "KEY-1")]
        versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), SQLModel.metadata)
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
    SQLModel.metadata.create_all(engine)  # exactly what the previous release's create_schema did
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
    SQLModel.metadata.create_all(engine, tables=[JOBS, Attempt.__table__])  # type: ignore[attr-defined]
    _seed_job(engine)
    assert adopted_revision(set(inspect(engine).get_table_names())) == BASELINE
    create_schema(engine)
    _assert_upgraded_keeping_rows(engine)
    assert {"webhook_events", "stock_keys"} <= set(inspect(engine).get_table_names())
    assert head_revision() != BASELINE  # so the test really ran migrations after the stamp
    engine.dispose()


def test_upgrade_twice_is_a_no_op(db_url: str) -> None:
    """Restarting a daemon on an up-to-date database changes nothing."""
    engine = create_db_engine(db_url)
    create_schema(engine)
    create_schema(engine)
    assert set(inspect(engine).get_table_names()) == {table.name for table in SQLModel.metadata.sorted_tables} | {
        "alembic_version"}
    engine.dispose()


@pytest.mark.postgres
def test_replicas_starting_together_migrate_once(pg_url: str) -> None:
    """Four replicas upgrading one empty PostgreSQL database at once all succeed (the advisory lock serialises)."""
    engines = [create_db_engine(pg_url) for _ in range(4)]
    errors: list[BaseException] = []

    def start(engine: object) -> None:
        try:
            create_schema(engine)  # type: ignore[arg-type]
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
    probe = ("import sys; from delivery_daemon.db import create_db_engine, create_schema, newest_revision; "
             f"create_schema(create_db_engine({url!r})); print('alembic' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
