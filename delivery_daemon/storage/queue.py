"""The job queue in the database: enqueue, claim with a lease, and every state transition.

All methods are coroutines that run their SQL on one dedicated thread per queue, so the event loop never blocks on
the database and SQLite never sees two writers from this process. That thread commits in groups
(:mod:`~delivery_daemon.storage.group_commit`): operations submitted while a commit is in progress share the next
transaction, each in its own savepoint, and each caller is answered only after the commit that holds its work.
Each transition is one atomic unit (its own savepoint) that also records an
:class:`~delivery_daemon.storage.models.Attempt`. Transitions of a running job are fenced by its lease: a worker
whose lease
was taken over finds no row to update and gets :class:`LeaseLost`.

A refund or dispute never takes a lease away (:meth:`JobQueue.mark`): on a running job it is stored as pending
(``jobs.flag``), and the job's next leased write settles it instead of applying as asked — before anything was sent
the job is cancelled (:class:`OrderCancelled`), after an attempt the attempt is recorded whatever the job's state
became meanwhile, and the job ends delivered and flagged (the attempt succeeded) or cancelled (it failed).

Uniqueness is the database's job: ``INSERT … ON CONFLICT DO NOTHING`` on (store, order_id).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar

from sqlalchemy import Engine, and_, bindparam, func, insert, select, text, union_all, update
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import SQLAlchemyError

from delivery_daemon.clock import Clock
from delivery_daemon.errors import DeliveryDaemonError
from delivery_daemon.order import IncomingOrder
from delivery_daemon.storage import dialect
from delivery_daemon.storage.cipher import Cipher
from delivery_daemon.storage.group_commit import DEFAULT_MAX_BATCH, GroupCommitter, Merge
from delivery_daemon.storage.models import FINAL, RUNNABLE, Attempt, Job, JobState, from_row

P = ParamSpec("P")
T = TypeVar("T")

SEALED = ("payload", "content")
"""Columns encrypted at rest when the queue has a cipher: the delivery token lives in one, the keys in the other."""

JOBS = Job.__table__  # type: ignore[attr-defined]
ATTEMPTS = Attempt.__table__  # type: ignore[attr-defined]


class QueueError(DeliveryDaemonError):
    """The database failed underneath the queue (translated from SQLAlchemy)."""


class LeaseLost(DeliveryDaemonError):
    """The job is no longer ours: its lease expired and another worker (or an operator) took it."""


@dataclass(frozen=True)
class Enqueued:
    job_id: int
    created: bool


@dataclass(frozen=True)
class MarkedOrder:
    """A refund or dispute to apply to an order (see :meth:`JobQueue.mark`)."""

    store: str
    order_id: str
    marketplace: str
    product_id: str
    kind: str  # "refunded" | "disputed"
    reason: str


@dataclass(frozen=True)
class Transition:
    """The outcome of one step, to be recorded atomically with the job's new state."""

    state: JobState
    step: str
    outcome: str
    http_status: int | None = None
    error: str | None = None
    duration_ms: float | None = None
    due_at: float | None = None
    count_attempt: bool = False


@dataclass(frozen=True)
class Verified:
    """What the marketplace confirmed for an order, not stored yet (see :meth:`JobQueue.save_content`)."""

    quantity: int
    buyer_email: str | None
    duration_ms: float


@dataclass(frozen=True)
class Settled:
    """How a refund or dispute that arrived while a job was leased settled it (see :meth:`JobQueue.transition`)."""

    kind: str  # "refunded" | "disputed"
    change: Transition
    """The job's outcome, as observers are told it: state delivered (flagged) or cancelled."""


class OrderCancelled(DeliveryDaemonError):
    """A refund or dispute was pending when the worker saved a step before sending: the job is cancelled (that is
    committed) and nothing may be sent."""

    def __init__(self, settled: Settled) -> None:
        super().__init__(f"order {settled.kind} before anything was sent: cancelled")
        self.settled = settled


_INSERT_ATTEMPT = insert(ATTEMPTS)
_ACCEPTED = Transition(JobState.QUEUED, "receive", "accepted")


def _received(order: IncomingOrder) -> Transition:
    """The first recorded step of a new job: accepted, or held with the receiver's reason."""
    return _ACCEPTED if order.held is None else Transition(JobState.HELD, "receive", "held", error=order.held)


def _attempt_row(job_id: int, change: Transition, now: float) -> dict[str, Any]:
    return {"job_id": job_id, "at": now, "step": change.step, "outcome": change.outcome, "state": change.state.value,
            "http_status": change.http_status, "error": change.error, "duration_ms": change.duration_ms}


def _queue_error(exc: SQLAlchemyError) -> QueueError:
    """SQLAlchemy's error as the queue's: its class and what that class means, not its SQL or parameters."""
    return QueueError(f"database error: {type(exc).__name__}: {exc.__class__.__doc__ or ''}".strip())


@dataclass(frozen=True)
class _LeasedChange:
    """One :meth:`JobQueue._update_leased` call, as an item of a merged run (:meth:`JobQueue._update_leased_many`)."""

    job_id: int
    owner: str
    values: dict[str, Any]
    changes: Sequence[Transition]


def _row_to_job(row: Any, cipher: Cipher | None = None) -> Job:
    values = dict(row._mapping)
    if cipher is not None:  # sealed at rest, plaintext in memory (see delivery_daemon.storage.cipher)
        for column in SEALED:
            if values.get(column) is not None:
                values[column] = cipher.open(values[column], f"{values['store']}/{values['order_id']}/{column}")
    return from_row(Job, values)


def read_history(conn: Connection, job_id: int) -> list[Attempt]:
    """Every recorded attempt and state change of job ``job_id``, oldest first (the queue's and the CLI's)."""
    rows = conn.execute(select(ATTEMPTS).where(ATTEMPTS.c.job_id == job_id).order_by(ATTEMPTS.c.id)).fetchall()
    return [from_row(Attempt, dict(row._mapping)) for row in rows]


OPERATOR_RETRYABLE = (JobState.DEAD.value, JobState.WAITING.value, JobState.RETRY_WAIT.value,
                      JobState.CANCELLED.value, JobState.HELD.value)
"""States an operator's ``retry`` requeues (``redeliver`` takes only delivered jobs that still hold content)."""

OperatorAction = Literal["retry", "redeliver"]


def operator_requeue(conn: Connection, job_id: int, action: OperatorAction, now: float, *,
                     only: Sequence[str] | None = None) -> bool:
    """The one operator transition behind ``orders retry|redeliver`` and the status page's buttons.

    In ``conn``'s transaction, queue job ``job_id`` due ``now`` with ``attempts`` back to 0 and no lease, and record
    an ``admin``/``action`` attempt — only if the job is in a state ``action`` allows (``retry``:
    :data:`OPERATOR_RETRYABLE`, narrowed by ``only``; ``redeliver``: delivered with stored content). The ``WHERE``
    names the states, so a running (leased) job is never taken from its worker. True if the job moved.
    """
    # attempts back to 0: the operator asked for another go, so the whole retry schedule applies again.
    if action == "retry":
        states = [state for state in OPERATOR_RETRYABLE if only is None or state in only]
        where = and_(JOBS.c.id == job_id, JOBS.c.state.in_(states))
    else:
        where = and_(JOBS.c.id == job_id, JOBS.c.state == JobState.DELIVERED.value, JOBS.c.content.is_not(None))
    moved = conn.execute(update(JOBS).where(where).values(
        state=JobState.QUEUED.value, due_at=now, updated_at=now, attempts=0, lease_owner=None, lease_until=None,
    )).rowcount
    if moved == 1:
        JobQueue._record(conn, job_id, Transition(JobState.QUEUED, "admin", action), now)
    return bool(moved == 1)


class JobQueue:
    """Async facade over the jobs and attempts tables."""

    def __init__(self, engine: Engine, clock: Clock, cipher: Cipher | None = None, *,
                 max_batch: int = DEFAULT_MAX_BATCH) -> None:
        self.engine = engine
        self.clock = clock
        self.cipher = cipher
        self._dialect = engine.dialect.name
        self.committer = GroupCommitter(engine, max_batch=max_batch)
        # Built once and executed with parameters: rebuilding them with .values(**row) for every order cost more
        # CPU on the database thread than the SQL itself (py-spy: statement construction and cache-key generation).
        self._insert_job = (
            self._insert_ignore().on_conflict_do_nothing(index_elements=["store", "order_id"]).returning(JOBS.c.id)
        )
        self._insert_jobs_keyed = (
            self._insert_ignore().on_conflict_do_nothing(index_elements=["store", "order_id"])
            .returning(JOBS.c.id, JOBS.c.store, JOBS.c.order_id)
        )
        self._count_duplicate = (
            update(JOBS)
            .where(and_(JOBS.c.store == bindparam("b_store"), JOBS.c.order_id == bindparam("b_order_id")))
            .values(received=JOBS.c.received + 1)
            .returning(JOBS.c.id)
        )
        self._leased_updates: dict[tuple[tuple[str, ...], bool], Any] = {}
        self._leased_merges: dict[tuple[tuple[str, ...], bool], Merge] = {}
        self._claim_statements: dict[int, Any] = {}

    def _seal(self, store: str, order_id: str, column: str, value: str) -> str:
        return value if self.cipher is None else self.cipher.seal(value, f"{store}/{order_id}/{column}")

    def close(self) -> None:
        self.committer.close()

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn`` on the queue's database thread (for feature modules with tables of their own).

        ``fn`` opens its own connection, so it runs alone, between group-commit batches, never inside one.
        """
        try:
            return await self.committer.run_alone(lambda: fn(*args, **kwargs))
        except SQLAlchemyError as exc:
            raise _queue_error(exc) from exc

    async def _run(self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(conn, *args)`` in a (shared) write transaction; resolves after its commit."""
        return await self._submit(lambda conn: fn(conn, *args, **kwargs), write=True)

    async def _read(self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._submit(lambda conn: fn(conn, *args, **kwargs), write=False)

    async def _submit(self, fn: Callable[[Connection], T], *, write: bool, merge: Merge | None = None,
                      item: Any = None) -> T:
        """``fn`` through the group committer (with ``merge``: as one of a merged run, see
        :meth:`GroupCommitter.run_merged`), SQLAlchemy's errors translated to :class:`QueueError`."""
        try:
            if merge is not None:
                return await self.committer.run_merged(fn, merge, item)
            return await self.committer.run(fn, write=write)
        except SQLAlchemyError as exc:
            raise _queue_error(exc) from exc

    # -- enqueue ---------------------------------------------------------------------------------------------

    def _insert_ignore(self) -> Any:
        return dialect.insert(self._dialect, JOBS)

    def _job_row(self, order: IncomingOrder, now: float) -> dict[str, Any]:
        return {
            "store": order.store, "order_id": order.order_id, "marketplace": order.marketplace,
            "product_id": order.product_id, "state": _received(order).state.value,
            "payload": self._seal(order.store, order.order_id, "payload", order.payload_json()),
            "attempts": 0, "received": 1, "due_at": now, "created_at": now, "updated_at": now,
            "last_error": order.held,
        }

    def _enqueue(self, conn: Connection, order: IncomingOrder) -> Enqueued:
        now = self.clock.now()
        inserted = conn.execute(self._insert_job, self._job_row(order, now)).scalar_one_or_none()
        if inserted is not None:
            self._record(conn, inserted, _received(order), now)
            return Enqueued(job_id=inserted, created=True)
        return self._duplicate(conn, order)

    def _duplicate(self, conn: Connection, order: IncomingOrder) -> Enqueued:
        job_id = conn.execute(self._count_duplicate,
                              {"b_store": order.store, "b_order_id": order.order_id}).scalar_one()
        return Enqueued(job_id=job_id, created=False)

    def _enqueue_many(self, conn: Connection, orders: list[IncomingOrder]) -> list[Enqueued]:
        """What ``_enqueue`` does for each order, in order, with one multi-row ``INSERT … ON CONFLICT DO NOTHING
        RETURNING`` for the jobs and one for their attempts (profile: per-row INSERTs and savepoints were most of
        the database thread's CPU under a webhook burst)."""
        now = self.clock.now()
        rows = conn.execute(self._insert_jobs_keyed, [self._job_row(order, now) for order in orders]).all()
        new = {(row.store, row.order_id): row.id for row in rows}
        results: list[Enqueued] = []
        for order in orders:
            job_id = new.pop((order.store, order.order_id), None)  # popped: the same order again is a duplicate
            results.append(Enqueued(job_id, True) if job_id is not None else self._duplicate(conn, order))
        accepted = [_attempt_row(r.job_id, _received(order), now)
                    for r, order in zip(results, orders, strict=True) if r.created]
        if accepted:
            conn.execute(_INSERT_ATTEMPT, accepted)
        return results

    async def enqueue(self, order: IncomingOrder) -> Enqueued:
        """Commit ``order`` as a queued job (``held`` when ``order.held`` says why); a second call for the same
        (store, order_id) changes nothing else.

        Enqueues waiting together share one multi-row INSERT (see :meth:`GroupCommitter.run_merged`)."""
        return await self._submit(lambda conn: self._enqueue(conn, order), write=True, merge=self._enqueue_many,
                                  item=order)

    # -- claim -----------------------------------------------------------------------------------------------

    def _claim(self, conn: Connection, owner: str, lease_seconds: float, limit: int) -> list[Job]:
        now = self.clock.now()
        statement = self._claim_statements.get(limit)
        if statement is None:  # built once per limit: building it per claim was a third of the claim's CPU
            statement = self._claim_statements[limit] = self._claim_statement(limit)
        rows = conn.execute(statement, {"b_now": now, "b_owner": owner, "b_until": now + lease_seconds}).fetchall()
        return sorted((_row_to_job(row, self.cipher) for row in rows), key=lambda job: (job.due_at, job.id or 0))

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
            .values(state=JobState.RUNNING.value, lease_owner=bindparam("b_owner"), lease_until=bindparam("b_until"),
                    updated_at=now)
            .returning(*JOBS.c)
        )

    async def claim(self, owner: str, lease_seconds: float, limit: int) -> list[Job]:
        """Lease up to ``limit`` due jobs to ``owner`` in one statement, oldest due first."""
        if limit <= 0:
            return []
        return await self._run(self._claim, owner, lease_seconds, limit)

    def _cancel_released(self, conn: Connection, where: Any, outcome: str, now: float) -> int:
        """Cancel the jobs of ``where`` (leased jobs about to be released) that a refund or dispute is pending on
        and that were never delivered: their worker is gone without recording an attempt, so they are not queued
        again (a job delivered before, being redelivered, is queued again like any other)."""
        pending = and_(where, JOBS.c.flag.is_not(None), JOBS.c.delivered_at.is_(None))
        rows = conn.execute(select(JOBS.c.id, JOBS.c.flag).where(pending).with_for_update(skip_locked=True)).all()
        for row in rows:
            conn.execute(update(JOBS).where(JOBS.c.id == row.id).values(
                state=JobState.CANCELLED.value, lease_owner=None, lease_until=None, flag=None, updated_at=now))
            self._record(conn, row.id, Transition(JobState.CANCELLED, "lease", outcome), now)
            self._record(conn, row.id, Transition(JobState.CANCELLED, "event", f"{row.flag}:cancelled"), now)
        return len(rows)

    def _release_expired(self, conn: Connection) -> int:
        now = self.clock.now()
        expired = and_(JOBS.c.state == JobState.RUNNING.value, JOBS.c.lease_until < now)
        cancelled = self._cancel_released(conn, expired, "expired", now)
        # Every replica runs this periodically: SKIP LOCKED gives concurrent runs disjoint rows (no deadlock, no
        # double "expired" record) and skips a job whose owner is committing its transition right now.
        locked = select(JOBS.c.id).where(expired).with_for_update(skip_locked=True).scalar_subquery()
        ids = conn.execute(
            update(JOBS)
            .where(and_(JOBS.c.id.in_(locked), expired))
            .values(state=JobState.QUEUED.value, lease_owner=None, lease_until=None, due_at=now,
                    updated_at=now)
            .returning(JOBS.c.id)
        ).scalars().all()
        for job_id in ids:
            self._record(conn, job_id, Transition(JobState.QUEUED, "lease", "expired"), now)
        return cancelled + len(ids)

    async def release_expired(self) -> int:
        """Put jobs whose lease ran out (their worker died) back in the queue — or cancel them if a refund or dispute
        is pending on them (:meth:`_cancel_released`); returns how many were released."""
        return await self._run(self._release_expired)

    def _release_owned(self, conn: Connection, owner: str) -> int:
        now = self.clock.now()
        owned = and_(JOBS.c.state == JobState.RUNNING.value, JOBS.c.lease_owner == owner)
        cancelled = self._cancel_released(conn, owned, "released", now)
        ids = conn.execute(
            update(JOBS)
            .where(owned)
            .values(state=JobState.QUEUED.value, lease_owner=None, lease_until=None, due_at=now,
                    updated_at=now)
            .returning(JOBS.c.id)
        ).scalars().all()
        for job_id in ids:
            self._record(conn, job_id, Transition(JobState.QUEUED, "lease", "released"), now)
        return cancelled + len(ids)

    async def release_owned(self, owner: str) -> int:
        """Hand back every job ``owner`` still holds (graceful shutdown; one with a pending refund is cancelled)."""
        return await self._run(self._release_owned, owner)

    def _renew(self, conn: Connection, owner: str, lease_seconds: float, job_ids: Collection[int] | None) -> int:
        now = self.clock.now()
        where = and_(JOBS.c.state == JobState.RUNNING.value, JOBS.c.lease_owner == owner)
        if job_ids is not None:
            where = and_(where, JOBS.c.id.in_(sorted(job_ids)))
        result = conn.execute(update(JOBS).where(where).values(lease_until=now + lease_seconds))
        return int(result.rowcount)

    async def renew_leases(self, owner: str, lease_seconds: float, job_ids: Collection[int] | None = None) -> int:
        """Extend the leases ``owner`` holds on ``job_ids`` (on every job it holds when None): a live worker keeps
        the jobs it works on however long a step takes. The worker names its jobs in flight, so that a job no task
        works on any more (its outcome could not be saved) is not kept leased and comes back when its lease ends."""
        if job_ids is not None and not job_ids:
            return 0
        return await self._run(self._renew, owner, lease_seconds, job_ids)

    # -- transitions of a leased job ---------------------------------------------------------------------------

    @staticmethod
    def _record(conn: Connection, job_id: int, change: Transition, now: float) -> None:
        conn.execute(_INSERT_ATTEMPT, _attempt_row(job_id, change, now))

    def _leased_update(self, columns: tuple[str, ...], count_attempt: bool) -> Any:
        """``UPDATE jobs SET <columns> … WHERE id = :b_id AND running AND lease_owner = :b_owner AND flag IS NULL``,
        built once per shape and executed with parameters (building it per call showed in the worker's profile).

        ``flag IS NULL``: a job a refund or dispute is pending on matches nothing, so that :meth:`_update_leased`
        settles it (:meth:`_settle_marked`) instead."""
        key = (columns, count_attempt)
        statement = self._leased_updates.get(key)
        if statement is None:
            statement = (
                update(JOBS)
                .where(and_(JOBS.c.id == bindparam("b_id"), JOBS.c.state == JobState.RUNNING.value,
                            JOBS.c.lease_owner == bindparam("b_owner"), JOBS.c.flag.is_(None)))
                .values({column: bindparam(column) for column in columns})
            )
            if count_attempt:
                statement = statement.values(attempts=JOBS.c.attempts + 1)
            self._leased_updates[key] = statement
        return statement

    def _update_leased(self, conn: Connection, job: Job, owner: str, values: dict[str, Any],
                       changes: Sequence[Transition], count_attempt: bool = False) -> Settled | None:
        now = self.clock.now()
        values = {**values, "updated_at": now}
        statement = self._leased_update(tuple(sorted(values)), count_attempt)
        result = conn.execute(statement, {**values, "b_id": job.id, "b_owner": owner})
        assert job.id is not None
        if result.rowcount != 1:
            marked = conn.execute(select(JOBS.c.flag, JOBS.c.delivered_at, JOBS.c.last_error).where(and_(
                JOBS.c.id == job.id, JOBS.c.state == JobState.RUNNING.value, JOBS.c.lease_owner == owner,
                JOBS.c.flag.is_not(None))).with_for_update()).first()
            if marked is None:
                raise LeaseLost(f"job {job.id} is no longer leased to {owner}")
            return self._settle_marked(conn, job.id, marked, values, changes, count_attempt, now)
        for change in changes:
            self._record(conn, job.id, change, now)
        return None

    def _settle_marked(self, conn: Connection, job_id: int, marked: Row[Any], values: dict[str, Any],
                       changes: Sequence[Transition], count_attempt: bool, now: float) -> Settled | None:
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
                self._record(conn, job_id, change, now)
            return None
        state = JobState.DELIVERED if asked == JobState.DELIVERED.value or delivered_before else JobState.CANCELLED
        settled = {**values, "state": state.value, "lease_owner": None, "lease_until": None,
                   "last_error": marked.last_error}
        if state is JobState.CANCELLED:
            settled["flag"] = None
        if count_attempt:
            settled["attempts"] = JOBS.c.attempts + 1
        conn.execute(update(JOBS).where(JOBS.c.id == job_id).values(settled))
        for change in changes:
            self._record(conn, job_id, replace(change, state=state), now)
        outcome = "flagged" if state is JobState.DELIVERED else "cancelled"
        self._record(conn, job_id, Transition(state, "event", f"{marked.flag}:{outcome}", error=marked.last_error),
                     now)
        last = changes[-1]
        told = replace(last, state=state) if state is JobState.DELIVERED else Transition(
            state, last.step, "cancelled", error=marked.last_error)
        return Settled(marked.flag, told)

    def _update_leased_many(self, shape: tuple[tuple[str, ...], bool], conn: Connection,
                            items: list[_LeasedChange]) -> list[Settled | None]:
        """What ``_update_leased`` does for each item (all of one ``shape``: the same columns, the same
        ``count_attempt``), as one executemany ``UPDATE`` and one multi-row attempts ``INSERT``.

        If any row was not ours any more or has a refund pending (the summed rowcount falls short) it raises, the
        group committer undoes the run and calls ``_update_leased`` for each item alone, which raises LeaseLost or
        settles the refund for exactly that job.
        """
        now = self.clock.now()
        result = conn.execute(self._leased_update(shape[0], shape[1]), [
            {**item.values, "updated_at": now, "b_id": item.job_id, "b_owner": item.owner} for item in items])
        if result.rowcount != len(items):
            raise LeaseLost(f"{len(items) - result.rowcount} of {len(items)} jobs are no longer leased as they were")
        conn.execute(_INSERT_ATTEMPT, [
            _attempt_row(item.job_id, change, now) for item in items for change in item.changes])
        return [None] * len(items)

    async def _leased(self, job: Job, owner: str, values: dict[str, Any], changes: Sequence[Transition],
                      count_attempt: bool = False) -> Settled | None:
        """``_update_leased`` on the database thread; calls of one shape waiting together are merged (profile:
        a savepoint, an UPDATE and an INSERT per call were most of the worker's database time)."""
        assert job.id is not None, "a leased job has been stored"
        shape = (tuple(sorted({*values, "updated_at"})), count_attempt)
        merge = self._leased_merges.get(shape)
        if merge is None:  # one merge callable per shape: the committer merges only calls with the same one
            merge = self._leased_merges[shape] = functools.partial(self._update_leased_many, shape)
        return await self._submit(lambda conn: self._update_leased(conn, job, owner, values, changes,
                                                                   count_attempt),
                                  write=True, merge=merge, item=_LeasedChange(job.id, owner, values, changes))

    @staticmethod
    def _before_sending(settled: Settled | None) -> None:
        if settled is not None:
            raise OrderCancelled(settled)

    async def save_verification(self, job: Job, owner: str, quantity: int, buyer_email: str | None,
                                duration_ms: float) -> None:
        """Store what the marketplace confirmed (the quantity comes only from here); :class:`OrderCancelled` if a
        refund or dispute was pending (stored too, and the job is cancelled)."""
        change = Transition(JobState.RUNNING, "verify", "ok", duration_ms=duration_ms)
        self._before_sending(await self._leased(job, owner, {"quantity": quantity, "buyer_email": buyer_email},
                                                [change]))

    async def save_content(self, job: Job, owner: str, content: str, duration_ms: float, *,
                           verified: Verified | None = None) -> None:
        """Store the generated content; it is never generated again for this job.

        With ``verified``, what the marketplace confirmed is stored in the same transaction (and both steps are
        recorded): the worker's hot path saves verification and content with one commit instead of two.
        :class:`OrderCancelled` if a refund or dispute was pending (all is stored, and the job is cancelled).
        """
        values: dict[str, Any] = {"content": self._seal(job.store, job.order_id, "content", content)}
        changes = [Transition(JobState.RUNNING, "generate", "ok", duration_ms=duration_ms)]
        if verified is not None:
            values.update(quantity=verified.quantity, buyer_email=verified.buyer_email)
            changes.insert(0, Transition(JobState.RUNNING, "verify", "ok", duration_ms=verified.duration_ms))
        self._before_sending(await self._leased(job, owner, values, changes))

    async def transition(self, job: Job, owner: str, change: Transition) -> Settled | None:
        """Move a leased job to its next state and record why, in one transaction.

        If a refund or dispute arrived meanwhile, ``change`` is recorded all the same and the job settles instead:
        delivered and flagged if ``change`` delivered it, cancelled otherwise — returned as :class:`Settled`."""
        values: dict[str, Any] = {"state": change.state.value, "lease_owner": None, "lease_until": None}
        if change.due_at is not None:
            values["due_at"] = change.due_at
        if change.error is not None or change.state in (JobState.DELIVERED,):
            values["last_error"] = change.error
        if change.state is JobState.DELIVERED:
            values["delivered_at"] = self.clock.now()
        return await self._leased(job, owner, values, [change], change.count_attempt)

    # -- operator and wake-up transitions ---------------------------------------------------------------------

    def _requeue(self, conn: Connection, where: Any, outcome: str, from_states: Sequence[str]) -> list[int]:
        now = self.clock.now()
        ids = conn.execute(
            update(JOBS)
            .where(and_(where, JOBS.c.state.in_(from_states)))
            .values(state=JobState.QUEUED.value, due_at=now, updated_at=now, lease_owner=None,
                    lease_until=None)
            .returning(JOBS.c.id)
        ).scalars().all()
        for job_id in ids:
            self._record(conn, job_id, Transition(JobState.QUEUED, "admin", outcome), now)
        return list(ids)

    async def wake_waiting(self, store: str, product_id: str) -> list[int]:
        """Requeue the jobs waiting for stock of one product (after a refill)."""
        where = and_(JOBS.c.store == store, JOBS.c.product_id == product_id)
        return await self._run(self._requeue, where, "stock_refilled", [JobState.WAITING.value])

    async def retry(self, job_id: int) -> bool:
        """:func:`operator_requeue` ``retry`` (the status page's button); True if the job moved."""
        return await self._run(operator_requeue, job_id, "retry", self.clock.now())

    def _claim_order(self, conn: Connection, store: str, order_id: str, owner: str, lease_seconds: float,
                     from_states: Sequence[str], without_content: bool = False) -> Job | None:
        now = self.clock.now()
        where = and_(JOBS.c.store == store, JOBS.c.order_id == order_id, JOBS.c.state.in_(from_states))
        row = conn.execute(
            update(JOBS)
            .where(and_(where, JOBS.c.content.is_(None)) if without_content else where)
            .values(state=JobState.RUNNING.value, lease_owner=owner, lease_until=now + lease_seconds,
                    updated_at=now)
            .returning(*JOBS.c)
        ).first()
        return _row_to_job(row, self.cipher) if row is not None else None

    async def claim_order(self, store: str, order_id: str, owner: str, lease_seconds: float,
                          from_states: Sequence[str] = RUNNABLE) -> Job | None:
        """Lease one named order to ``owner`` if it is in one of ``from_states``; None if it is not (e.g. a worker
        holds it, or it is final)."""
        return await self._run(self._claim_order, store, order_id, owner, lease_seconds, from_states)

    def _enqueue_leased(self, conn: Connection, order: IncomingOrder, owner: str, lease_seconds: float,
                        from_states: Sequence[str]) -> Job | None:
        self._enqueue(conn, order)
        return self._claim_order(conn, order.store, order.order_id, owner, lease_seconds, from_states,
                                 without_content=True)

    async def enqueue_leased(self, order: IncomingOrder, owner: str, lease_seconds: float,
                             from_states: Sequence[str]) -> Job | None:
        """Commit ``order`` as :meth:`enqueue` does and, in the same transaction, lease it to ``owner`` if it is in
        one of ``from_states`` and has no content yet; None if not. A worker never sees the new job unleased: a
        synchronous answer (Sellix dynamic products) must not race a worker delivering it through the channel."""
        return await self._run(self._enqueue_leased, order, owner, lease_seconds, from_states)

    def _mark(self, conn: Connection, order: MarkedOrder) -> str:
        now = self.clock.now()
        where = and_(JOBS.c.store == order.store, JOBS.c.order_id == order.order_id)
        # FOR UPDATE (PostgreSQL): a claim or a worker's write of this job waits for ours, and ours sees theirs.
        row = conn.execute(select(JOBS.c.id, JOBS.c.state).where(where).with_for_update()).first()
        if row is None:
            # Remembered as cancelled, so that a "paid" webhook arriving after its refund delivers nothing.
            job_id = conn.execute(insert(JOBS).values(
                store=order.store, order_id=order.order_id, marketplace=order.marketplace,
                product_id=order.product_id, state=JobState.CANCELLED.value, payload="{}", attempts=0,
                received=0, due_at=now, created_at=now, updated_at=now, last_error=order.reason,
            ).returning(JOBS.c.id)).scalar_one()
            outcome, state = "cancelled_unseen", JobState.CANCELLED
        elif row.state == JobState.DELIVERED.value:
            job_id, outcome, state = row.id, "flagged", JobState.DELIVERED
            conn.execute(update(JOBS).where(JOBS.c.id == job_id).values(flag=order.kind, last_error=order.reason,
                                                                        updated_at=now))
        elif row.state == JobState.CANCELLED.value:
            job_id, outcome, state = row.id, "already_cancelled", JobState.CANCELLED
        elif row.state == JobState.RUNNING.value:
            # Its worker keeps the lease (an attempt may be on the wire): its next write settles the refund
            # (_settle_marked), so the outcome of the attempt is recorded whatever it was.
            job_id, outcome, state = row.id, "pending", JobState.RUNNING
            conn.execute(update(JOBS).where(JOBS.c.id == job_id).values(flag=order.kind, last_error=order.reason,
                                                                        updated_at=now))
        else:
            job_id, outcome, state = row.id, "cancelled", JobState.CANCELLED
            conn.execute(update(JOBS).where(JOBS.c.id == job_id).values(
                state=JobState.CANCELLED.value, lease_owner=None, lease_until=None, last_error=order.reason,
                updated_at=now))
        self._record(conn, job_id, Transition(state, "event", f"{order.kind}:{outcome}"[:32],
                                              error=order.reason), now)
        return outcome

    async def mark(self, order: MarkedOrder) -> str:
        """Apply a refund or dispute to an order in one transaction and record it in the order's history.

        Returns ``cancelled`` (not leased and not delivered: nothing will be sent), ``cancelled_unseen`` (unknown
        order, remembered cancelled), ``already_cancelled``, ``flagged`` (already delivered: ``flag`` and
        ``last_error`` say why, the job stays delivered) or ``pending`` (a worker holds the job: the lease is not
        taken, the worker settles it — see :meth:`transition`).
        """
        return await self._run(self._mark, order)
    async def redeliver(self, job_id: int) -> bool:
        """:func:`operator_requeue` ``redeliver``: send a delivered job's stored content again (never regenerated).
        True if it moved (only a delivered job with content does)."""
        return await self._run(operator_requeue, job_id, "redeliver", self.clock.now())

    # -- reads -----------------------------------------------------------------------------------------------

    def _get(self, conn: Connection, job_id: int) -> Job | None:
        row = conn.execute(select(JOBS).where(JOBS.c.id == job_id)).first()
        return _row_to_job(row, self.cipher) if row is not None else None

    async def get(self, job_id: int) -> Job | None:
        return await self._read(self._get, job_id)

    def _find(self, conn: Connection, store: str, order_id: str) -> Job | None:
        row = conn.execute(select(JOBS).where(and_(JOBS.c.store == store, JOBS.c.order_id == order_id))).first()
        return _row_to_job(row, self.cipher) if row is not None else None

    async def find(self, store: str, order_id: str) -> Job | None:
        return await self._read(self._find, store, order_id)

    async def history(self, job_id: int) -> list[Attempt]:
        return await self._read(read_history, job_id)

    def _counts(self, conn: Connection) -> dict[str, int]:
        rows = conn.execute(select(JOBS.c.state, func.count()).group_by(JOBS.c.state)).fetchall()
        counts = {state.value: 0 for state in JobState}
        counts.update({row[0]: int(row[1]) for row in rows})
        return counts

    async def counts(self) -> dict[str, int]:
        """Jobs per state (every state present, zero when empty)."""
        return await self._read(self._counts)

    def _next_due(self, conn: Connection) -> float | None:
        return conn.execute(select(func.min(JOBS.c.due_at)).where(JOBS.c.state.in_(RUNNABLE))).scalar_one_or_none()

    async def next_due(self) -> float | None:
        """The earliest due time of a runnable job, if any."""
        return await self._read(self._next_due)

    def _writable(self, conn: Connection) -> None:
        conn.execute(text("SELECT 1"))

    async def check_writable(self) -> None:
        """Take (and release) the write lock; raises QueueError if the database cannot be written."""
        await self._run(self._writable)


__all__ = ["FINAL", "Enqueued", "JobQueue", "LeaseLost", "MarkedOrder", "OrderCancelled", "QueueError", "Settled",
           "Transition", "Verified"]
