"""The chaos run's database checks, on SQLite and on PostgreSQL."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import make_url, text

from delivery_daemon.reference.chaos.database import check_database, describe
from delivery_daemon.storage.engine import create_db_engine, create_schema


def _migrated(url: str) -> None:
    engine = create_db_engine(url)
    create_schema(engine)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO jobs (store, order_id, marketplace, product_id, state, payload, attempts, "
                "received, due_at, created_at, updated_at) "
                "VALUES ('s', 'o1', 'm', 'p', 'delivered', '{}', 1, 1, 0, 0, 0)"
            )
        )
    engine.dispose()


def test_whole_database_passes_with_its_backends_integrity_check(db_url: str) -> None:
    """A migrated database passes; SQLite reports integrity_check's ``ok``, PostgreSQL amcheck's index count."""
    _migrated(db_url)
    report = check_database(db_url)
    assert report.problems == [] and report.states == {"delivered": 1}
    if report.backend == "sqlite":
        assert report.integrity == "ok"
    else:
        assert report.integrity.startswith("ok (amcheck: ") and "0 indexes" not in report.integrity


def test_schema_behind_head_is_a_problem(db_url: str) -> None:
    """A database not at this build's migration head is reported with its revision."""
    _migrated(db_url)
    engine = create_db_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0002'"))
    engine.dispose()
    assert any("schema at revision 0002" in problem for problem in check_database(db_url).problems)


def test_orphan_attempt_is_a_problem_on_sqlite(tmp_path: Path) -> None:
    """An attempt whose job is gone (a connection without ``foreign_keys`` can leave one) is reported."""
    url = f"sqlite:///{tmp_path / 'orphan.db'}"
    _migrated(url)
    with sqlite3.connect(tmp_path / "orphan.db") as conn:  # foreign keys are off unless a connection asks
        conn.execute("INSERT INTO attempts (job_id, at, step, outcome, state) VALUES (999, 0, 'x', 'y', 'queued')")
    conn.close()
    assert check_database(url).problems == ["1 attempts belong to no job"]


def test_describe_hides_the_password() -> None:
    """The run's first line names the database without its password."""
    shown = describe("postgresql://u:s3cret@db.internal:5432/d")
    assert "s3cret" not in shown and shown.startswith("postgresql+psycopg://u:***@db.internal")


@pytest.mark.postgres
def test_without_the_right_to_create_amcheck_the_logical_checks_still_run(pg_url: str) -> None:
    """A role that may not create the extension gets ``ok (amcheck unavailable)``, not a failure."""
    _migrated(pg_url)
    engine = create_db_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(text("DROP ROLE IF EXISTS chaos_reader"))
        conn.execute(text("CREATE ROLE chaos_reader LOGIN"))
        conn.execute(text("GRANT SELECT ON ALL TABLES IN SCHEMA public TO chaos_reader"))
    engine.dispose()
    url = make_url(pg_url).set(username="chaos_reader").render_as_string(hide_password=False)
    report = check_database(url)
    assert report.problems == [] and report.integrity == "ok (amcheck unavailable)"
    assert report.states == {"delivered": 1}
