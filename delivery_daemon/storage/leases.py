"""The SQL of leases: claim due jobs (or one named order) for a worker, renew its leases, release them.

A running job always carries a lease (owner and expiry). A worker that dies leaves its leases to expire; every
replica releases expired leases periodically, and a job a refund or dispute is pending on is cancelled then instead
of queued again (:meth:`Leases._cancel_released`).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import and_, bindparam, select, union_all, update
from sqlalchemy.engine import Connection

from delivery_daemon.clock import Clock
from delivery_daemon.storage.cipher import Cipher
from delivery_daemon.storage.jobs import JOBS, Transition, record, row_to_job
from delivery_daemon.storage.models import RUNNABLE, Job, JobState
from delivery_daemon.storage.prepared import Prepared
from delivery_daemon.storage.revocations import open_revocation


class Leases:
    """Lease statements for one database (``dialect_name``), run on the queue's database thread."""

    def __init__(self, dialect_name: str, clock: Clock, cipher: Cipher | None) -> None:
        self.clock = clock
        self.cipher = cipher
        self._dialect = dialect_name
        self._claim_statements: dict[int, Prepared] = {}

    def claim(self, conn: Connection, owner: str, lease_seconds: float, limit: int) -> list[Job]:
        now = self.clock.now()
        statement = self._claim_statements.get(limit)
        if statement is None:  # built once per limit: building it per claim was a third of the claim's CPU
            statement = self._claim_statements[limit] = Prepared(self._claim_statement(limit))
        rows = statement.execute(conn, {"b_now": now, "b_owner": owner, "b_until": now + lease_seconds}).rows
        return sorted((row_to_job(row, self.cipher) for row in rows), key=lambda job: (job.due_at, job.id or 0))

    def _claim_statement(self, limit: int) -> Any:
        """``UPDATE jobs SET running, leased … WHERE id IN (up to limit due jobs) RETURNING *``, with parameters
        ``b_now``, ``b_owner`` and ``b_until``."""
        now: Any = bindparam("b_now")
        due: Any
        if self._dialect == "postgresql":
            due = (
                select(JOBS.c.id)
                .where(and_(JOBS.c.state.in_(RUNNABLE), JOBS.c.due_at <= now))
                .order_by(JOBS.c.due_at, JOBS.c.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
                .scalar_subquery()
            )
        else:
            # With ``state IN (two values)`` SQLite cannot read (state, due_at) in due order and sorts every due
            # job on each claim (EXPLAIN: "USE TEMP B-TREE FOR ORDER BY"): O(backlog) per claim, so draining a
            # backlog was quadratic. One index-ordered, limited scan per state, merged, reads at most 2 x limit rows.
            per_state = [
                select(JOBS.c.id, JOBS.c.due_at)
                .where(and_(JOBS.c.state == state, JOBS.c.due_at <= now))
                .order_by(JOBS.c.due_at, JOBS.c.id)
                .limit(limit)
                .subquery()
                for state in RUNNABLE
            ]
            merged = union_all(*(select(sub.c.id, sub.c.due_at) for sub in per_state)).subquery()
            due = select(merged.c.id).order_by(merged.c.due_at, merged.c.id).limit(limit).scalar_subquery()
        return (
            update(JOBS)
            .where(JOBS.c.id.in_(due))
            .values(
                state=JobState.RUNNING.value,
                lease_owner=bindparam("b_owner"),
                lease_until=bindparam("b_until"),
                updated_at=now,
            )
            .returning(*JOBS.c)
        )

    def claim_order(
        self,
        conn: Connection,
        store: str,
        order_id: str,
        owner: str,
        lease_seconds: float,
        from_states: Sequence[str],
        without_content: bool = False,
    ) -> Job | None:
        now = self.clock.now()
        where = and_(JOBS.c.store == store, JOBS.c.order_id == order_id, JOBS.c.state.in_(from_states))
        row = conn.execute(
            update(JOBS)
            .where(and_(where, JOBS.c.content.is_(None)) if without_content else where)
            .values(state=JobState.RUNNING.value, lease_owner=owner, lease_until=now + lease_seconds, updated_at=now)
            .returning(*JOBS.c)
        ).first()
        return row_to_job(row, self.cipher) if row is not None else None

    def _cancel_released(self, conn: Connection, where: Any, outcome: str, now: float) -> int:
        """Cancel the jobs of ``where`` (leased jobs about to be released) that a refund or dispute is pending on
        and that were never delivered: their worker is gone without recording an attempt, so they are not queued
        again (a job delivered before, being redelivered, is queued again like any other)."""
        pending = and_(where, JOBS.c.flag.is_not(None), JOBS.c.delivered_at.is_(None))
        rows = conn.execute(select(JOBS.c.id, JOBS.c.flag).where(pending).with_for_update(skip_locked=True)).all()
        for row in rows:
            conn.execute(
                update(JOBS)
                .where(JOBS.c.id == row.id)
                .values(state=JobState.CANCELLED.value, lease_owner=None, lease_until=None, flag=None, updated_at=now)
            )
            record(conn, row.id, Transition(JobState.CANCELLED, "lease", outcome), now)
            record(conn, row.id, Transition(JobState.CANCELLED, "event", f"{row.flag}:cancelled"), now)
            # Its worker may have died mid-attempt without recording it: the content counts as sent.
            open_revocation(conn, row.id, str(row.flag), now, sent=True)
        return len(rows)

    def release_expired(self, conn: Connection) -> int:
        now = self.clock.now()
        expired = and_(JOBS.c.state == JobState.RUNNING.value, JOBS.c.lease_until < now)
        cancelled = self._cancel_released(conn, expired, "expired", now)
        # Every replica runs this periodically: SKIP LOCKED gives concurrent runs disjoint rows (no deadlock, no
        # double "expired" record) and skips a job whose owner is committing its transition right now.
        locked = select(JOBS.c.id).where(expired).with_for_update(skip_locked=True).scalar_subquery()
        ids = (
            conn.execute(
                update(JOBS)
                .where(and_(JOBS.c.id.in_(locked), expired))
                .values(state=JobState.QUEUED.value, lease_owner=None, lease_until=None, due_at=now, updated_at=now)
                .returning(JOBS.c.id)
            )
            .scalars()
            .all()
        )
        for job_id in ids:
            record(conn, job_id, Transition(JobState.QUEUED, "lease", "expired"), now)
        return cancelled + len(ids)

    def release_owned(self, conn: Connection, owner: str) -> int:
        now = self.clock.now()
        owned = and_(JOBS.c.state == JobState.RUNNING.value, JOBS.c.lease_owner == owner)
        cancelled = self._cancel_released(conn, owned, "released", now)
        ids = (
            conn.execute(
                update(JOBS)
                .where(owned)
                .values(state=JobState.QUEUED.value, lease_owner=None, lease_until=None, due_at=now, updated_at=now)
                .returning(JOBS.c.id)
            )
            .scalars()
            .all()
        )
        for job_id in ids:
            record(conn, job_id, Transition(JobState.QUEUED, "lease", "released"), now)
        return cancelled + len(ids)

    def renew(self, conn: Connection, owner: str, lease_seconds: float, job_ids: Collection[int] | None) -> int:
        now = self.clock.now()
        where = and_(JOBS.c.state == JobState.RUNNING.value, JOBS.c.lease_owner == owner)
        if job_ids is not None:
            where = and_(where, JOBS.c.id.in_(sorted(job_ids)))
        result = conn.execute(update(JOBS).where(where).values(lease_until=now + lease_seconds))
        return int(result.rowcount)
