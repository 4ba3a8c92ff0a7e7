"""Read-only SQL on the jobs and attempts tables: one job (by id or by order) and its history for the queue, and
the counts the metrics scrape and ``stock status`` show.

The queue's reads take the connection its database thread gives them; :func:`oldest_unfinished` and
:func:`waiting_per_product` open their own (a scrape and a command read while the worker writes).
"""

from __future__ import annotations

from sqlalchemy import Engine, and_, func, select
from sqlalchemy.engine import Connection

from delivery_daemon.storage.cipher import Cipher
from delivery_daemon.storage.jobs import ATTEMPTS, JOBS, row_to_job
from delivery_daemon.storage.models import FINAL, RUNNABLE, Attempt, Job, JobState, from_row


def read_history(conn: Connection, job_id: int) -> list[Attempt]:
    """Every recorded attempt and state change of job ``job_id``, oldest first (the queue's and the CLI's)."""
    rows = conn.execute(select(ATTEMPTS).where(ATTEMPTS.c.job_id == job_id).order_by(ATTEMPTS.c.id)).fetchall()
    return [from_row(Attempt, dict(row._mapping)) for row in rows]


def get_job(conn: Connection, job_id: int, cipher: Cipher | None) -> Job | None:
    row = conn.execute(select(JOBS).where(JOBS.c.id == job_id)).first()
    return row_to_job(row, cipher) if row is not None else None


def find_job(conn: Connection, store: str, order_id: str, cipher: Cipher | None) -> Job | None:
    row = conn.execute(select(JOBS).where(and_(JOBS.c.store == store, JOBS.c.order_id == order_id))).first()
    return row_to_job(row, cipher) if row is not None else None


def count_states(conn: Connection) -> dict[str, int]:
    """Jobs per state (every state present, zero when empty)."""
    rows = conn.execute(select(JOBS.c.state, func.count()).group_by(JOBS.c.state)).fetchall()
    counts = {state.value: 0 for state in JobState}
    counts.update({row[0]: int(row[1]) for row in rows})
    return counts


def next_due(conn: Connection) -> float | None:
    """The earliest due time of a runnable job, if any."""
    return conn.execute(select(func.min(JOBS.c.due_at)).where(JOBS.c.state.in_(RUNNABLE))).scalar_one_or_none()


def oldest_unfinished(engine: Engine) -> float | None:
    """When the oldest job not yet delivered, dead or cancelled was created (None when there is none)."""
    with engine.connect() as conn:
        value = conn.execute(select(func.min(JOBS.c.created_at)).where(JOBS.c.state.not_in(FINAL))).scalar()
    return float(value) if value is not None else None


def waiting_per_product(engine: Engine) -> dict[tuple[str, str], int]:
    """Jobs waiting for stock, per (store, product id)."""
    with engine.connect() as conn:
        return {
            (s, p): int(n)
            for s, p, n in conn.execute(
                select(JOBS.c.store, JOBS.c.product_id, func.count())
                .where(JOBS.c.state == JobState.WAITING.value)
                .group_by(JOBS.c.store, JOBS.c.product_id)
            ).all()
        }
