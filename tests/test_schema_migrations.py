"""Alembic-managed schema on SQLite and PostgreSQL: fresh databases, first-release databases, concurrent starts."""

from __future__ import annotations

import threading

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import insert, inspect, select, text
from sqlmodel import SQLModel

from delivery_daemon.db import create_db_engine, create_schema
from delivery_daemon.models import Job
from delivery_daemon.schema import BASELINE, current_revision, head_revision

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


def test_first_release_database_is_stamped_then_upgraded(db_url: str) -> None:
    """A database made by create_all (no alembic_version) keeps its rows and ends at head, not re-created."""
    engine = create_db_engine(db_url)
    SQLModel.metadata.create_all(engine)  # exactly what the previous release's create_schema did
    with engine.begin() as conn:
        conn.execute(insert(JOBS).values(store="s", order_id="o1", marketplace="softstore", product_id="p",
                                         state="delivered", payload="{}", attempts=1, received=1, due_at=1.0,
                                         created_at=1.0, updated_at=1.0, content="KEY-1"))
    assert current_revision(engine) is None
    create_schema(engine)
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        assert conn.execute(select(JOBS.c.order_id, JOBS.c.content)).all() == [("o1", "KEY-1")]
        versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    assert versions == [head_revision()]
    assert head_revision() != BASELINE  # so the test really ran a migration after the stamp
    engine.dispose()


def test_upgrade_twice_is_a_no_op(db_url: str) -> None:
    """Restarting a daemon on an up-to-date database changes nothing."""
    engine = create_db_engine(db_url)
    create_schema(engine)
    create_schema(engine)
    assert set(inspect(engine).get_table_names()) == {"jobs", "attempts", "alembic_version"}
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
