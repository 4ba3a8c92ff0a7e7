"""The after-delivery sweep's query (``storage.followups.pending``) reads the history through an index, on SQLite and
on PostgreSQL, instead of scanning every attempt of every order."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Engine

from delivery_daemon.storage.engine import create_db_engine, create_schema
from delivery_daemon.storage.followups import pending


def _statements(engine: Engine) -> list[tuple[str, Any]]:
    """The SQL (and its parameters) ``pending`` runs, with a delivered job so that its second query runs too."""
    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        seen.append((statement, parameters))

    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO jobs (store, order_id, marketplace, product_id, state, payload, attempts, received,"
                " due_at, created_at, updated_at, delivered_at)"
                " VALUES ('s', 'o', 'virtual-stores', 'cart', 'delivered', '{}', 1, 1, 0, 0, 0, 1)"
            )
        )
    event.listen(engine, "before_cursor_execute", capture)
    try:
        with engine.connect() as conn:
            assert len(pending(conn, ["s"], "fulfil", 100, None)) == 1
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    return [(sql, params) for sql, params in seen if "attempts" in sql]


def test_the_sweeps_history_lookups_use_an_index(db_url: str) -> None:
    """Neither of pending()'s queries on ``attempts`` scans the table: the finished-step subquery uses
    ix_attempts_step_outcome (migration 0008), the per-job tries ix_attempts_job_id."""
    engine = create_db_engine(db_url)
    create_schema(engine)
    statements = _statements(engine)
    assert len(statements) == 2
    plans = []
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("SET enable_seqscan = off")  # tiny tables: make the planner show what it can use
        for sql, params in statements:
            prefix = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN "
            plans.append("\n".join(str(row[-1]) for row in conn.exec_driver_sql(prefix + sql, params)))
    finished, tries = plans
    assert "ix_attempts_step_outcome" in finished, finished
    assert "ix_attempts_job_id" in tries or "ix_attempts_step_outcome" in tries, tries
    for plan in plans:
        assert "SCAN attempts" not in plan and "Seq Scan on attempts" not in plan, plan
    engine.dispose()
