"""The SQL of revocations: a content of an order to take back, as a durable, retried step of the order.

:func:`open_revocation` runs inside the transaction that refunds, disputes, cancels, revokes or re-issues the order
(:mod:`~delivery_daemon.storage.transitions`, :mod:`~delivery_daemon.storage.leases`,
:mod:`~delivery_daemon.storage.operator`), so a committed refund always has its revocation. The worker
(:mod:`delivery_daemon.pipeline.revoke`) leases due revocations (:func:`claim_revocations`) and records each step
(:func:`save_revocation`) fenced by its lease, like a job's; every step is also a row of the order's history (step
:data:`STEP`), so ``orders show`` and the status page show it.

One content is revoked once: ``(job_id, issue)`` is unique, and a second refund or dispute of the same content adds
nothing. A content never sent (no delivery attempt was ever made with it) is cleared from the job in the same
transaction and ``jobs.issue`` moves on, so that retrying the order generates a new content rather than sending one
that was given back (a stock key returned to the pool).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, or_, select, update
from sqlalchemy.engine import Connection

from delivery_daemon.storage import dialect
from delivery_daemon.storage.cipher import Cipher
from delivery_daemon.storage.jobs import ATTEMPTS, JOBS, Transition, record, row_to_job
from delivery_daemon.storage.models import Job, JobState, Revocation, RevocationState, from_row, table_of

REVOCATIONS = table_of(Revocation)

STEP = "revoke"
"""The step name of a revocation's rows in the order's history."""

REASONS = ("refunded", "disputed", "cancelled", "revoked", "reissued")
"""Why a content is revoked: the marketplace's refund or dispute, a cancellation, ``orders revoke``, ``orders
reissue``."""


@dataclass(frozen=True)
class Claimed:
    """A revocation leased to a worker, with its job (content opened) and the revoked content (opened)."""

    revocation: Revocation
    job: Job
    content: str | None


def redeliverable() -> ColumnElement[bool]:
    """SQL, on ``jobs``: the job is delivered, holds its content, and that content was never taken back — no refund or
    dispute flag, no revocation of its current ``issue``. What ``orders redeliver`` and the status page's button
    require: sending revoked keys again would hand the buyer what the seller (or the marketplace) took back."""
    revoked = select(REVOCATIONS.c.id).where(
        and_(REVOCATIONS.c.job_id == JOBS.c.id, REVOCATIONS.c.issue == JOBS.c.issue)
    )
    return and_(
        JOBS.c.state == JobState.DELIVERED.value,
        JOBS.c.content.is_not(None),
        JOBS.c.flag.is_(None),
        ~exists(revoked),
    )


def _sent(conn: Connection, job_id: int, delivered_at: float | None) -> bool:
    """Whether the job's content may have reached anybody: it was delivered, or a delivery attempt was recorded."""
    if delivered_at is not None:
        return True
    attempted = select(ATTEMPTS.c.id).where(and_(ATTEMPTS.c.job_id == job_id, ATTEMPTS.c.step == "deliver"))
    return bool(conn.execute(select(exists(attempted))).scalar())


def open_revocation(
    conn: Connection, job_id: int, reason: str, now: float, *, reissue: bool = False, sent: bool | None = None
) -> bool:
    """In ``conn``'s transaction, record that job ``job_id``'s current content is to be revoked for ``reason`` (one
    of :data:`REASONS`), and add it to the order's history. Nothing when the job holds no content.

    ``sent`` (computed when None: delivered, or a delivery attempt recorded) says whether anybody may hold the
    content; one never sent, and any content of a ``reissue``, is cleared from the job and ``jobs.issue`` moves on,
    so the next content is generated anew. True if a revocation was added (False: none to add, or this content's
    was added before).
    """
    row = conn.execute(
        select(JOBS.c.content, JOBS.c.issue, JOBS.c.delivered_at, JOBS.c.state).where(JOBS.c.id == job_id)
    ).first()
    if row is None or row.content is None:
        return False
    was_sent = _sent(conn, job_id, row.delivered_at) if sent is None else sent
    added = conn.execute(
        dialect.insert(conn.dialect.name, REVOCATIONS)
        .values(
            job_id=job_id,
            issue=row.issue,
            reason=reason,
            sent=was_sent,
            content=row.content,  # still sealed with the job's context, which the copy keeps
            state=RevocationState.PENDING.value,
            attempts=0,
            due_at=now,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=["job_id", "issue"])
        .returning(REVOCATIONS.c.id)
    ).first()
    if reissue or not was_sent:
        conn.execute(update(JOBS).where(JOBS.c.id == job_id).values(content=None, issue=JOBS.c.issue + 1))
    outcome = f"{reason}:{'pending' if added is not None else 'already'}"
    record(conn, job_id, Transition(JobState(row.state), STEP, outcome), now)
    return added is not None


def _due(now: float) -> Any:
    return or_(
        and_(REVOCATIONS.c.state == RevocationState.PENDING.value, REVOCATIONS.c.due_at <= now),
        and_(REVOCATIONS.c.state == RevocationState.RUNNING.value, REVOCATIONS.c.lease_until < now),
    )


def claim_revocations(
    conn: Connection, owner: str, lease_seconds: float, limit: int, now: float, cipher: Cipher | None
) -> list[Claimed]:
    """Lease up to ``limit`` due revocations to ``owner`` (pending ones whose time has come, and running ones whose
    worker's lease ran out), oldest due first."""
    # SKIP LOCKED: replicas claiming together take disjoint rows (PostgreSQL; SQLite has one writer anyway).
    ids = (
        conn.execute(
            select(REVOCATIONS.c.id)
            .where(_due(now))
            .order_by(REVOCATIONS.c.due_at, REVOCATIONS.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        .scalars()
        .all()
    )
    if not ids:
        return []
    rows = conn.execute(
        update(REVOCATIONS)
        .where(and_(REVOCATIONS.c.id.in_(ids), _due(now)))
        .values(
            state=RevocationState.RUNNING.value,
            lease_owner=owner,
            lease_until=now + lease_seconds,
            attempts=REVOCATIONS.c.attempts + 1,
            updated_at=now,
        )
        .returning(*REVOCATIONS.c)
    ).all()
    revocations = [from_row(Revocation, dict(row._mapping)) for row in rows]
    jobs = {
        job.id: job
        for job in (
            row_to_job(row, cipher)
            for row in conn.execute(select(JOBS).where(JOBS.c.id.in_([r.job_id for r in revocations]))).all()
        )
    }
    claimed = []
    for revocation in sorted(revocations, key=lambda r: (r.due_at, r.id or 0)):
        job = jobs[revocation.job_id]
        content = revocation.content
        if content is not None and cipher is not None:
            content = cipher.open(content, f"{job.store}/{job.order_id}/content")
        claimed.append(Claimed(revocation, job, content))
    return claimed


def save_revocation(
    conn: Connection, revocation_id: int, owner: str, values: dict[str, Any], change: Transition, now: float
) -> bool:
    """Write ``values`` to the revocation if ``owner`` still holds its lease, and record ``change`` (its state is
    replaced by the job's) in the order's history. False (nothing written) if the lease was lost."""
    row = conn.execute(
        update(REVOCATIONS)
        .where(
            and_(
                REVOCATIONS.c.id == revocation_id,
                REVOCATIONS.c.state == RevocationState.RUNNING.value,
                REVOCATIONS.c.lease_owner == owner,
            )
        )
        .values({**values, "updated_at": now})
        .returning(REVOCATIONS.c.job_id)
    ).first()
    if row is None:
        return False
    state = conn.execute(select(JOBS.c.state).where(JOBS.c.id == row.job_id)).scalar_one()
    record(conn, row.job_id, Transition(JobState(state), change.step, change.outcome, error=change.error), now)
    return True


def read_revocations(conn: Connection, job_id: int) -> list[Revocation]:
    """Every revocation of job ``job_id``, oldest first (content still sealed)."""
    rows = conn.execute(select(REVOCATIONS).where(REVOCATIONS.c.job_id == job_id).order_by(REVOCATIONS.c.id)).all()
    return [from_row(Revocation, dict(row._mapping)) for row in rows]


def revoked_hashes(conn: Connection, store: str, product_id: str) -> list[str]:
    """The SHA-256 (hex) of every key revoked for orders of ``product_id`` in ``store``, sorted: what a signed
    revocation list publishes. A revocation's hashes are known once the worker first ran it."""
    rows = conn.execute(
        select(REVOCATIONS.c.key_hashes)
        .join(JOBS, JOBS.c.id == REVOCATIONS.c.job_id)
        .where(and_(JOBS.c.store == store, JOBS.c.product_id == product_id, REVOCATIONS.c.key_hashes.is_not(None)))
    ).scalars()
    return sorted({digest for hashes in rows for digest in json.loads(hashes)})


def count_revocations(conn: Connection) -> dict[str, int]:
    """Revocations per state (every state present, zero when none)."""
    counts = {state.value: 0 for state in RevocationState}
    for state, count in conn.execute(select(REVOCATIONS.c.state, func.count()).group_by(REVOCATIONS.c.state)).all():
        counts[str(state)] = int(count)
    return counts


def revocation_summaries(conn: Connection, job_ids: Sequence[int]) -> dict[int, str]:
    """For each of ``job_ids`` that has revocations, the state of its newest one (for lists of orders)."""
    if not job_ids:
        return {}
    newest = (
        select(REVOCATIONS.c.job_id, func.max(REVOCATIONS.c.id).label("id"))
        .where(REVOCATIONS.c.job_id.in_(list(job_ids)))
        .group_by(REVOCATIONS.c.job_id)
        .subquery()
    )
    rows = conn.execute(
        select(REVOCATIONS.c.job_id, REVOCATIONS.c.state).join(newest, newest.c.id == REVOCATIONS.c.id)
    ).all()
    return {int(job_id): str(state) for job_id, state in rows}
