"""Steps that run after a job is delivered (e.g. telling a shop its order is fulfilled): their outcomes are rows of
the order's history like any step's, with the job left ``delivered``; a job whose step has no final outcome yet
(``ok`` or ``dead``) is one to follow up. See :mod:`delivery_daemon.pipeline.followup`.

No column or table of its own: the step's history is the record (the schema is unchanged).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import and_, func, select
from sqlalchemy.engine import Connection

from delivery_daemon.storage.cipher import Cipher
from delivery_daemon.storage.jobs import ATTEMPTS, JOBS, Transition, record, row_to_job
from delivery_daemon.storage.models import Job, JobState

FINISHED = ("ok", "dead")
"""Outcomes after which a follow-up step is not tried again."""


@dataclass(frozen=True)
class Pending:
    """A delivered job whose follow-up ``step`` has not finished: how often it was tried, and when last."""

    job: Job
    tries: int
    last_at: float | None


def note(conn: Connection, job_id: int, change: Transition, now: float) -> None:
    """Record a follow-up step's outcome in the order's history; the job itself is not changed."""
    record(conn, job_id, change, now)


def pending(conn: Connection, stores: Collection[str], step: str, limit: int, cipher: Cipher | None) -> list[Pending]:
    """Delivered jobs of ``stores`` whose ``step`` has no finished outcome, oldest delivery first (at most
    ``limit``)."""
    if not stores:
        return []
    finished = select(ATTEMPTS.c.job_id).where(and_(ATTEMPTS.c.step == step, ATTEMPTS.c.outcome.in_(FINISHED)))
    rows = conn.execute(
        select(JOBS)
        .where(
            and_(
                JOBS.c.state == JobState.DELIVERED.value,
                JOBS.c.store.in_(list(stores)),
                JOBS.c.id.not_in(finished),
            )
        )
        .order_by(JOBS.c.delivered_at)
        .limit(limit)
    ).fetchall()
    jobs = [row_to_job(row, cipher) for row in rows]
    if not jobs:
        return []
    tries = {
        row[0]: (int(row[1]), float(row[2]))
        for row in conn.execute(
            select(ATTEMPTS.c.job_id, func.count(), func.max(ATTEMPTS.c.at))
            .where(and_(ATTEMPTS.c.step == step, ATTEMPTS.c.job_id.in_([job.id for job in jobs])))
            .group_by(ATTEMPTS.c.job_id)
        ).fetchall()
    }
    return [Pending(job, *tries.get(job.id, (0, None))) for job in jobs]
