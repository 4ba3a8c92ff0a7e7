"""Read-only consistency checks of a daemon's database, for a chaos run's verdict
(:mod:`delivery_daemon.reference.chaos.database`): is what the daemons left behind whole?

Both backends: one job per (store, order id), every attempt belongs to a job, no stock key is in the pool twice
(:func:`consistency_problems`), and the jobs per state (:func:`job_states`). Then the backend's own check of its
files (:func:`integrity`): SQLite's ``PRAGMA integrity_check``; on PostgreSQL the ``amcheck`` extension's
``bt_index_check`` on every B-tree index of the daemon's tables when the extension can be created (it ships with
PostgreSQL but creating it needs a superuser; without it the answer is ``ok (amcheck unavailable)``).
"""

from __future__ import annotations

from sqlalchemy import Connection, text
from sqlalchemy.exc import SQLAlchemyError

DUPLICATE_JOBS = "SELECT count(*) FROM (SELECT 1 FROM jobs GROUP BY store, order_id HAVING count(*) > 1) AS d"
ORPHAN_ATTEMPTS = "SELECT count(*) FROM attempts WHERE job_id NOT IN (SELECT id FROM jobs)"
# Keys are sealed at rest (random nonce): their HMAC is what repeats when a key is in the pool twice.
DUPLICATE_STOCK = (
    "SELECT count(*) FROM (SELECT 1 FROM stock_keys WHERE key_hash IS NOT NULL "
    "GROUP BY store, product_id, key_hash HAVING count(*) > 1) AS d"
)
STATES = "SELECT state, count(*) FROM jobs GROUP BY state"
BTREE_INDEXES = """
    SELECT c.oid::regclass::text FROM pg_index i
    JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam
    JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace
    WHERE a.amname = 'btree' AND n.nspname = current_schema() AND c.relpersistence = 'p'
    ORDER BY 1"""


def job_states(conn: Connection) -> dict[str, int]:
    """Jobs per state (only the states some job is in)."""
    return {str(state): int(count) for state, count in conn.execute(text(STATES)).all()}


def consistency_problems(conn: Connection) -> list[str]:
    """What breaks the tables' invariants, e.g. ``2 jobs share a (store, order id)``; empty when none does."""
    problems: list[str] = []
    for what, sql in (
        ("jobs share a (store, order id)", DUPLICATE_JOBS),
        ("attempts belong to no job", ORPHAN_ATTEMPTS),
        ("stock keys are in the pool twice", DUPLICATE_STOCK),
    ):
        count = int(conn.execute(text(sql)).scalar_one())
        if count:
            problems.append(f"{count} {what}")
    return problems


def integrity(conn: Connection) -> str:
    """The backend's own check of its files: ``ok…`` when it passes, else what it found."""
    return _postgres_integrity(conn) if conn.dialect.name == "postgresql" else _sqlite_integrity(conn)


def _sqlite_integrity(conn: Connection) -> str:
    return str(conn.execute(text("PRAGMA integrity_check")).scalar_one())


def _postgres_integrity(conn: Connection) -> str:
    """``ok`` when ``bt_index_check`` passes on every index; ``ok (amcheck unavailable)`` when it cannot run."""
    try:
        with conn.begin_nested():
            conn.execute(text("CREATE EXTENSION IF NOT EXISTS amcheck"))
    except SQLAlchemyError:
        return "ok (amcheck unavailable)"
    indexes = conn.execute(text(BTREE_INDEXES)).scalars().all()
    broken: list[str] = []
    for index in indexes:
        try:
            with conn.begin_nested():
                conn.execute(text("SELECT bt_index_check(CAST(:index AS regclass), true)"), {"index": index})
        except SQLAlchemyError as exc:
            broken.append(f"{index}: {str(getattr(exc, 'orig', None) or exc).splitlines()[0][:120]}")
    return f"ok (amcheck: {len(indexes)} indexes)" if not broken else "; ".join(broken)
