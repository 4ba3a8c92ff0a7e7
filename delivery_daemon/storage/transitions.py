"""The SQL of state transitions: a leased job's writes, refunds and disputes and how they settle, and the operator's
and the stock refill's requeues.

Each transition is one atomic unit (its own savepoint) that also records an attempt. Transitions of a running job
are fenced by its lease: a worker whose lease was taken over finds no row to update and gets
:class:`~delivery_daemon.storage.jobs.LeaseLost`.

A refund or dispute never takes a lease away (:meth:`Transitions.mark`): on a running job it is stored as pending
(``jobs.flag``), and the job's next leased write settles it instead of applying as asked — before anything was sent
the job is cancelled (:class:`~delivery_daemon.storage.jobs.OrderCancelled`), after an attempt the attempt is
recorded whatever the job's state became meanwhile, and the job ends delivered and flagged (the attempt succeeded)
or cancelled (it failed).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from sqlalchemy import and_, bindparam, insert, or_, select, update
from sqlalchemy.engine import Connection, Row

from delivery_daemon.clock import Clock
from delivery_daemon.storage.group_commit import Merge
from delivery_daemon.storage.jobs import (
    JOBS,
    LeaseLost,
    MarkedOrder,
    Settled,
    Transition,
    attempt_row,
    record,
    record_many,
)
from delivery_daemon.storage.models import Job, JobState
from delivery_daemon.storage.prepared import Prepared
from delivery_daemon.storage.revocations import open_revocation, redeliverable

OPERATOR_RETRYABLE = (
    JobState.DEAD.value,
    JobState.WAITING.value,
    JobState.RETRY_WAIT.value,
    JobState.CANCELLED.value,
    JobState.HELD.value,
)
"""States an operator's ``retry`` requeues (``redeliver`` takes only delivered jobs whose stored content was
never revoked: :func:`~delivery_daemon.storage.revocations.redeliverable`)."""

OperatorAction = Literal["retry", "redeliver"]


def item_waiting(product_id: str, reason: str) -> str:
    """The ``last_error`` of a cart's job waiting for stock of its item ``product_id``: how a refill of that product
    finds it (:meth:`Transitions.wake_waiting`), the job's own product id being the cart's."""
    return f"item {product_id}: {reason}"


def operator_requeue(
    conn: Connection, job_id: int, action: OperatorAction, now: float, *, only: Sequence[str] | None = None
) -> bool:
    """The one operator transition behind ``orders retry|redeliver`` and the status page's buttons.

    In ``conn``'s transaction, queue job ``job_id`` due ``now`` with ``attempts`` back to 0 and no lease, and record
    an ``admin``/``action`` attempt — only if the job is in a state ``action`` allows (``retry``:
    :data:`OPERATOR_RETRYABLE`, narrowed by ``only``; ``redeliver``: delivered with stored content never revoked,
    :func:`~delivery_daemon.storage.revocations.redeliverable`). The ``WHERE`` names the states, so a running
    (leased) job is never taken from its worker. True if the job moved.
    """
    # attempts back to 0: the operator asked for another go, so the whole retry schedule applies again.
    if action == "retry":
        states = [state for state in OPERATOR_RETRYABLE if only is None or state in only]
        where = and_(JOBS.c.id == job_id, JOBS.c.state.in_(states))
    else:
        where = and_(JOBS.c.id == job_id, redeliverable())
    moved = conn.execute(
        update(JOBS)
        .where(where)
        .values(
            state=JobState.QUEUED.value,
            due_at=now,
            updated_at=now,
            attempts=0,
            lease_owner=None,
            lease_until=None,
        )
    ).rowcount
    if moved == 1:
        record(conn, job_id, Transition(JobState.QUEUED, "admin", action), now)
    return bool(moved == 1)


@dataclass(frozen=True)
class LeasedChange:
    """One :meth:`Transitions.update_leased` call, as an item of a merged run (see :meth:`Transitions.merge`)."""

    job_id: int
    owner: str
    values: dict[str, Any]
    changes: Sequence[Transition]


class Transitions:
    """Transition statements, run on the queue's database thread."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._leased_updates: dict[tuple[tuple[str, ...], bool], Prepared] = {}
        self._leased_merges: dict[tuple[tuple[str, ...], bool], Merge] = {}

    # -- transitions of a leased job ---------------------------------------------------------------------------

    def _leased_update(self, columns: tuple[str, ...], count_attempt: bool) -> Prepared:
        """``UPDATE jobs SET <columns> … WHERE id = :b_id AND running AND lease_owner = :b_owner AND flag IS NULL``,
        built once per shape and executed with parameters (building it per call showed in the worker's profile).

        ``flag IS NULL``: a job a refund or dispute is pending on matches nothing, so that :meth:`update_leased`
        settles it (:meth:`_settle_marked`) instead."""
        key = (columns, count_attempt)
        prepared = self._leased_updates.get(key)
        if prepared is None:
            statement = (
                update(JOBS)
                .where(
                    and_(
                        JOBS.c.id == bindparam("b_id"),
                        JOBS.c.state == JobState.RUNNING.value,
                        JOBS.c.lease_owner == bindparam("b_owner"),
                        JOBS.c.flag.is_(None),
                    )
                )
                .values({column: bindparam(column) for column in columns})
            )
            if count_attempt:
                statement = statement.values(attempts=JOBS.c.attempts + 1)
            prepared = self._leased_updates[key] = Prepared(statement)
        return prepared

    def update_leased(
        self,
        conn: Connection,
        job: Job,
        owner: str,
        values: dict[str, Any],
        changes: Sequence[Transition],
        count_attempt: bool = False,
    ) -> Settled | None:
        """Write ``values`` to ``job`` if ``owner`` still holds its lease and record ``changes``; LeaseLost if it
        does not, and the refund's settlement (:meth:`_settle_marked`) if one is pending."""
        now = self.clock.now()
        values = {**values, "updated_at": now}
        statement = self._leased_update(tuple(sorted(values)), count_attempt)
        result = statement.execute(conn, {**values, "b_id": job.id, "b_owner": owner})
        assert job.id is not None
        if result.rowcount != 1:
            marked = conn.execute(
                select(JOBS.c.flag, JOBS.c.delivered_at, JOBS.c.last_error)
                .where(
                    and_(
                        JOBS.c.id == job.id,
                        JOBS.c.state == JobState.RUNNING.value,
                        JOBS.c.lease_owner == owner,
                        JOBS.c.flag.is_not(None),
                    )
                )
                .with_for_update()
            ).first()
            if marked is None:
                raise LeaseLost(f"job {job.id} is no longer leased to {owner}")
            return self._settle_marked(conn, job.id, marked, values, changes, count_attempt, now)
        for change in changes:
            record(conn, job.id, change, now)
        return None

    def _settle_marked(
        self,
        conn: Connection,
        job_id: int,
        marked: Row[Any, Any, Any],
        values: dict[str, Any],
        changes: Sequence[Transition],
        count_attempt: bool,
        now: float,
    ) -> Settled | None:
        """A leased write (``values``, recording ``changes``) to a job a refund or dispute (``marked.flag``) is
        pending on. The write is applied, its steps are recorded, and the job's state becomes:

        * a save before sending (no ``state`` in ``values``): cancelled — nothing has been sent;
        * the outcome of a delivery attempt: delivered and flagged if it succeeded, else cancelled;
        * for a job delivered before (an operator's redelivery): delivered and flagged whatever the attempt did,
          and a save before sending goes ahead as asked (returns None) — the keys are out already.

        Cancelling clears the flag and leaves the reason in ``last_error``; flagging keeps it there too.
        """
        asked = values.get("state")
        delivered_before = marked.delivered_at is not None
        if asked is None and delivered_before:
            conn.execute(update(JOBS).where(JOBS.c.id == job_id).values(values))
            for change in changes:
                record(conn, job_id, change, now)
            return None
        state = JobState.DELIVERED if asked == JobState.DELIVERED.value or delivered_before else JobState.CANCELLED
        settled = {
            **values,
            "state": state.value,
            "lease_owner": None,
            "lease_until": None,
            "last_error": marked.last_error,
        }
        if state is JobState.CANCELLED:
            settled["flag"] = None
        if count_attempt:
            settled["attempts"] = JOBS.c.attempts + 1
        conn.execute(update(JOBS).where(JOBS.c.id == job_id).values(settled))
        for change in changes:
            record(conn, job_id, replace(change, state=state), now)
        outcome = "flagged" if state is JobState.DELIVERED else "cancelled"
        record(conn, job_id, Transition(state, "event", f"{marked.flag}:{outcome}", error=marked.last_error), now)
        # Refunded or disputed with its content stored: taken back (a content that never went out is given back).
        open_revocation(conn, job_id, str(marked.flag), now)
        last = changes[-1]
        told = (
            replace(last, state=state)
            if state is JobState.DELIVERED
            else Transition(state, last.step, "cancelled", error=marked.last_error)
        )
        return Settled(marked.flag, told)

    def _update_leased_many(
        self, shape: tuple[tuple[str, ...], bool], conn: Connection, items: list[LeasedChange]
    ) -> list[Settled | None]:
        """What :meth:`update_leased` does for each item (all of one ``shape``: the same columns, the same
        ``count_attempt``), as one executemany ``UPDATE`` and one multi-row attempts ``INSERT``.

        If any row was not ours any more or has a refund pending (the summed rowcount falls short) it raises, the
        group committer undoes the run and calls :meth:`update_leased` for each item alone, which raises LeaseLost
        or settles the refund for exactly that job.
        """
        now = self.clock.now()
        changed = self._leased_update(shape[0], shape[1]).execute_many(
            conn, [{**item.values, "updated_at": now, "b_id": item.job_id, "b_owner": item.owner} for item in items]
        )
        if changed != len(items):
            raise LeaseLost(f"{len(items) - changed} of {len(items)} jobs are no longer leased as they were")
        record_many(conn, [attempt_row(item.job_id, change, now) for item in items for change in item.changes])
        return [None] * len(items)

    def merge(self, values: dict[str, Any], count_attempt: bool) -> Merge:
        """The merge of the leased writes of ``values``' shape (see
        :meth:`~delivery_daemon.storage.group_commit.GroupCommitter.run_merged`): calls of one shape waiting
        together are merged (profile: a savepoint, an UPDATE and an INSERT per call were most of the worker's
        database time)."""
        shape = (tuple(sorted({*values, "updated_at"})), count_attempt)
        merge = self._leased_merges.get(shape)
        if merge is None:  # one merge callable per shape: the committer merges only calls with the same one
            merge = self._leased_merges[shape] = functools.partial(self._update_leased_many, shape)
        return merge

    # -- refunds, disputes and wake-ups ------------------------------------------------------------------------

    def wake_waiting(self, conn: Connection, store: str, product_id: str) -> list[int]:
        """Requeue the jobs waiting for stock of one product: the job's own product, or an item of its cart (its
        ``last_error`` is :func:`item_waiting`'s for that product)."""
        now = self.clock.now()
        waiting = and_(JOBS.c.store == store, JOBS.c.state == JobState.WAITING.value)
        # A cart's waiting item is matched in Python, not with LIKE: product ids may hold % and _.
        prefix = item_waiting(product_id, "")
        carts = [
            row.id
            for row in conn.execute(
                select(JOBS.c.id, JOBS.c.last_error).where(and_(waiting, JOBS.c.product_id != product_id))
            )
            if (row.last_error or "").startswith(prefix)
        ]
        ids = (
            conn.execute(
                update(JOBS)
                .where(and_(waiting, or_(JOBS.c.product_id == product_id, JOBS.c.id.in_(carts))))
                .values(state=JobState.QUEUED.value, due_at=now, updated_at=now, lease_owner=None, lease_until=None)
                .returning(JOBS.c.id)
            )
            .scalars()
            .all()
        )
        for job_id in ids:
            record(conn, job_id, Transition(JobState.QUEUED, "admin", "stock_refilled"), now)
        return list(ids)

    def mark(self, conn: Connection, order: MarkedOrder) -> str:
        """Apply a refund or dispute (see :meth:`JobQueue.mark <delivery_daemon.storage.queue.JobQueue.mark>`)."""
        now = self.clock.now()
        where = and_(JOBS.c.store == order.store, JOBS.c.order_id == order.order_id)
        # FOR UPDATE (PostgreSQL): a claim or a worker's write of this job waits for ours, and ours sees theirs.
        row = conn.execute(select(JOBS.c.id, JOBS.c.state).where(where).with_for_update()).first()
        if row is None:
            # Remembered as cancelled, so that a "paid" webhook arriving after its refund delivers nothing.
            job_id = conn.execute(
                insert(JOBS)
                .values(
                    store=order.store,
                    order_id=order.order_id,
                    marketplace=order.marketplace,
                    product_id=order.product_id,
                    state=JobState.CANCELLED.value,
                    payload="{}",
                    attempts=0,
                    received=0,
                    due_at=now,
                    created_at=now,
                    updated_at=now,
                    last_error=order.reason,
                )
                .returning(JOBS.c.id)
            ).scalar_one()
            outcome, state = "cancelled_unseen", JobState.CANCELLED
        elif row.state == JobState.DELIVERED.value:
            job_id, outcome, state = row.id, "flagged", JobState.DELIVERED
            conn.execute(
                update(JOBS).where(JOBS.c.id == job_id).values(flag=order.kind, last_error=order.reason, updated_at=now)
            )
        elif row.state == JobState.CANCELLED.value:
            job_id, outcome, state = row.id, "already_cancelled", JobState.CANCELLED
        elif row.state == JobState.RUNNING.value:
            # Its worker keeps the lease (an attempt may be on the wire): its next write settles the refund
            # (_settle_marked), so the outcome of the attempt is recorded whatever it was.
            job_id, outcome, state = row.id, "pending", JobState.RUNNING
            conn.execute(
                update(JOBS).where(JOBS.c.id == job_id).values(flag=order.kind, last_error=order.reason, updated_at=now)
            )
        else:
            job_id, outcome, state = row.id, "cancelled", JobState.CANCELLED
            conn.execute(
                update(JOBS)
                .where(JOBS.c.id == job_id)
                .values(
                    state=JobState.CANCELLED.value,
                    lease_owner=None,
                    lease_until=None,
                    last_error=order.reason,
                    updated_at=now,
                )
            )
        record(conn, job_id, Transition(state, "event", f"{order.kind}:{outcome}"[:32], error=order.reason), now)
        if outcome in ("flagged", "cancelled"):
            # Its content (if one was stored) is revoked in this transaction: the refund is never without it.
            open_revocation(conn, job_id, order.kind, now)
        return outcome
