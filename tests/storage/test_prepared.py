"""Prepared statements run on the driver's cursor inside SQLAlchemy's transaction, on both databases: the same rows
and rowcounts as SQLAlchemy's execution, SQLAlchemy's errors, and SQLAlchemy's execution wherever it must convert."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, and_, bindparam, event, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from delivery_daemon.clock import ManualClock
from delivery_daemon.storage import dialect
from delivery_daemon.storage.engine import create_db_engine, create_schema
from delivery_daemon.storage.jobs import ATTEMPTS, JOBS
from delivery_daemon.storage.leases import Leases
from delivery_daemon.storage.prepared import Prepared
from tests.storage.test_group_commit import job_row as queued_row


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = create_db_engine(db_url)
    create_schema(engine)
    yield engine
    engine.dispose()


def job_row(order_id: str) -> dict[str, Any]:
    """A running job's row, leased to ``w1``."""
    return {**queued_row(order_id), "state": "running", "lease_owner": "w1", "lease_until": 30.0, "due_at": 1.5}


def executions(conn: Connection) -> list[object]:
    """Every statement SQLAlchemy's own execution runs on ``conn`` from now on (``before_execute``)."""
    seen: list[object] = []
    event.listen(conn, "before_execute", lambda _conn, statement, *_args: seen.append(statement))
    return seen


def test_an_insert_returning_gives_every_column_by_name_and_skips_sqlalchemys_execution(engine: Engine) -> None:
    """A new row comes back as a mapping of every column, typed as stored; on SQLite no SQLAlchemy execution runs
    (on PostgreSQL psycopg's Float needs the column's runtime type code, so SQLAlchemy executes it)."""
    statement = (
        dialect.insert(engine.dialect.name, JOBS)
        .on_conflict_do_nothing(index_elements=["store", "order_id"])
        .returning(*JOBS.c)
    )
    prepared = Prepared(statement)
    with engine.begin() as conn:
        seen = executions(conn)
        first = prepared.execute(conn, job_row("o1")).first()
        again = prepared.execute(conn, job_row("o1"))
    assert first is not None
    assert (first["order_id"], first["due_at"], first["lease_owner"]) == ("o1", 1.5, "w1")
    assert set(first) == set(JOBS.c.keys())
    assert again.first() is None  # the conflict inserted nothing
    if engine.dialect.name == "sqlite":
        assert seen == []
    with engine.connect() as conn:
        stored = conn.execute(select(JOBS).where(JOBS.c.order_id == "o1")).one()
    assert dict(stored._mapping) == first


def test_an_update_reports_its_rowcount_with_the_statements_own_literals_bound(engine: Engine) -> None:
    """The leased update's ``attempts + 1`` literal is bound, and its rowcount tells a held lease from a lost one;
    nothing goes through SQLAlchemy's execution on either database."""
    bump = Prepared(
        update(JOBS)
        .where(and_(JOBS.c.order_id == bindparam("b_order"), JOBS.c.lease_owner == bindparam("b_owner")))
        .values(updated_at=bindparam("updated_at"), attempts=JOBS.c.attempts + 1)
    )
    with engine.begin() as conn:
        conn.execute(insert(JOBS), job_row("o1"))
        seen = executions(conn)
        mine = bump.execute(conn, {"updated_at": 5, "b_order": "o1", "b_owner": "w1"})
        theirs = bump.execute(conn, {"updated_at": 6, "b_order": "o1", "b_owner": "w2"})
        row = conn.execute(select(JOBS.c.attempts, JOBS.c.updated_at)).one()
    assert (mine.rowcount, theirs.rowcount, mine.rows) == (1, 0, [])
    assert tuple(row) == (1, 5.0)
    assert len(seen) == 1  # only the select: the two prepared updates ran on the cursor


def test_a_driver_error_is_sqlalchemys_and_a_savepoint_undoes_only_its_statement(engine: Engine) -> None:
    """A constraint the database refuses raises SQLAlchemy's IntegrityError, and rolling back the savepoint leaves
    the transaction's earlier work to commit."""
    record = Prepared(insert(ATTEMPTS))
    attempt = {
        "at": 1.0,
        "step": "receive",
        "outcome": "accepted",
        "state": "queued",
        "http_status": None,
        "error": None,
        "duration_ms": None,
    }
    with engine.begin() as conn:
        job_id = conn.execute(insert(JOBS).returning(JOBS.c.id), job_row("o1")).scalar_one()
        record.execute(conn, {"job_id": job_id, **attempt})
        with pytest.raises(IntegrityError) as raised, conn.begin_nested():
            record.execute(conn, {"job_id": job_id, **attempt, "step": None})  # step is NOT NULL
        assert "parameters hidden" in str(raised.value)
    with engine.connect() as conn:
        assert conn.execute(select(ATTEMPTS.c.step)).scalars().all() == ["receive"]


def test_sqlalchemy_executes_where_it_must(engine: Engine) -> None:
    """With a ``before_cursor_execute`` listener (statement capture) or a column default computed in Python, the
    statement runs through SQLAlchemy: the listener sees it and the default is applied."""
    insert_job = Prepared(insert(JOBS))
    captured: list[str] = []

    def capture(*args: Any) -> None:
        captured.append(args[2])

    without_state = {key: value for key, value in job_row("o1").items() if key != "state"}
    with engine.begin() as conn:
        insert_job.execute(conn, without_state)  # jobs.state's default ("queued") is SQLAlchemy's, in Python
        event.listen(engine, "before_cursor_execute", capture)
        try:
            Prepared(insert(ATTEMPTS)).execute(
                conn,
                {"job_id": 1, "at": 1.0, "step": "s", "outcome": "o", "state": "queued"}
                | {"http_status": None, "error": None, "duration_ms": None},
            )
        finally:
            event.remove(engine, "before_cursor_execute", capture)
    assert any(sql.startswith("INSERT INTO attempts") for sql in captured)
    with engine.connect() as conn:
        assert conn.execute(select(JOBS.c.state)).scalar_one() == "queued"


def test_an_executemany_sums_the_rows_it_changed(engine: Engine) -> None:
    """The merged leased writes' executemany reports the rows changed in all (one lease lost: one short), without
    SQLAlchemy's execution."""
    bump = Prepared(
        update(JOBS)
        .where(and_(JOBS.c.order_id == bindparam("b_order"), JOBS.c.lease_owner == bindparam("b_owner")))
        .values(updated_at=bindparam("updated_at"))
    )
    with engine.begin() as conn:
        conn.execute(insert(JOBS), [job_row("o1"), job_row("o2"), job_row("o3")])
        seen = executions(conn)
        mine = [{"updated_at": 9, "b_order": order_id, "b_owner": "w1"} for order_id in ("o1", "o2", "o3")]
        assert bump.execute_many(conn, mine) == 3
        assert bump.execute_many(conn, [*mine[:2], {**mine[2], "b_owner": "w2"}]) == 2
        assert seen == []
        assert conn.execute(select(JOBS.c.updated_at)).scalars().all() == [9.0, 9.0, 9.0]


def test_a_claim_runs_prepared_on_sqlite_and_through_sqlalchemy_where_an_in_list_is_rendered_late(
    engine: Engine,
) -> None:
    """The claim leases the due jobs, oldest first, on both databases: on SQLite (a limited scan per state) without
    SQLAlchemy's execution, on PostgreSQL (``state IN (...)``, rendered at execution) through it."""
    leases = Leases(engine.dialect.name, ManualClock(), None)
    with engine.begin() as conn:
        conn.execute(insert(JOBS), [{**queued_row(f"o{i}"), "due_at": float(3 - i)} for i in range(3)])
        seen = executions(conn)
        claimed = leases.claim(conn, "w9", 30.0, 2)
    assert [(job.order_id, job.state, job.lease_owner) for job in claimed] == [
        ("o2", "running", "w9"),
        ("o1", "running", "w9"),
    ]
    assert (seen == []) == (engine.dialect.name == "sqlite")
