"""The job queue in the database: enqueue, claim with a lease, and every state transition.

All methods are coroutines that run their SQL on one dedicated thread per queue, so the event loop never blocks on
the database and SQLite never sees two writers from this process. That thread commits in groups
(:mod:`~delivery_daemon.storage.group_commit`): operations submitted while a commit is in progress share the next
transaction, each in its own savepoint, and each caller is answered only after the commit that holds its work.
Each transition is one atomic unit (its own savepoint) that also records an
:class:`~delivery_daemon.storage.models.Attempt`. Transitions of a running job are fenced by its lease: a worker
whose lease was taken over finds no row to update and gets :class:`~delivery_daemon.storage.jobs.LeaseLost`.

A refund or dispute never takes a lease away (:meth:`JobQueue.mark`): on a running job it is stored as pending
(``jobs.flag``), and the job's next leased write settles it instead of applying as asked — before anything was sent
the job is cancelled (:class:`~delivery_daemon.storage.jobs.OrderCancelled`), after an attempt the attempt is
recorded whatever the job's state became meanwhile, and the job ends delivered and flagged (the attempt succeeded)
or cancelled (it failed).

:class:`JobQueue` is the facade: the SQL lives in :mod:`~delivery_daemon.storage.enqueue`,
:mod:`~delivery_daemon.storage.leases`, :mod:`~delivery_daemon.storage.transitions` and
:mod:`~delivery_daemon.storage.reads`; the values it takes and returns and its errors in
:mod:`~delivery_daemon.storage.jobs`.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Collection, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import Engine, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from delivery_daemon.clock import Clock
from delivery_daemon.order import IncomingOrder
from delivery_daemon.storage.cipher import Cipher
from delivery_daemon.storage.enqueue import Enqueue
from delivery_daemon.storage.followups import Pending, note, pending
from delivery_daemon.storage.group_commit import DEFAULT_MAX_BATCH, GroupCommitter, Merge
from delivery_daemon.storage.jobs import (
    Enqueued,
    Lease,
    MarkedOrder,
    OrderCancelled,
    Settled,
    Transition,
    Verified,
    queue_error,
    seal,
)
from delivery_daemon.storage.leases import Leases
from delivery_daemon.storage.models import RUNNABLE, Attempt, Job, JobState, Revocation
from delivery_daemon.storage.reads import count_states, find_job, get_job, next_due, read_history
from delivery_daemon.storage.revocations import (
    Claimed,
    claim_revocations,
    count_revocations,
    read_revocations,
    revoked_hashes,
    save_revocation,
)
from delivery_daemon.storage.transitions import LeasedChange, Transitions, operator_requeue

P = ParamSpec("P")
T = TypeVar("T")


class JobQueue:
    """Async facade over the jobs and attempts tables."""

    def __init__(
        self, engine: Engine, clock: Clock, cipher: Cipher | None = None, *, max_batch: int = DEFAULT_MAX_BATCH
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.cipher = cipher
        self.committer = GroupCommitter(engine, max_batch=max_batch)
        self._enqueuer = Enqueue(engine.dialect.name, clock, cipher)
        self._leases = Leases(engine.dialect.name, clock, cipher)
        self._transitions = Transitions(clock)

    def close(self) -> None:
        self.committer.close()

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn`` on the queue's database thread (for feature modules with tables of their own).

        ``fn`` opens its own connection, so it runs alone, between group-commit batches, never inside one.
        """
        try:
            return await self.committer.run_alone(lambda: fn(*args, **kwargs))
        except SQLAlchemyError as exc:
            raise queue_error(exc) from exc

    async def _run(self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(conn, *args)`` in a (shared) write transaction; resolves after its commit."""
        return await self._submit(lambda conn: fn(conn, *args, **kwargs), write=True)

    async def _read(self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._submit(lambda conn: fn(conn, *args, **kwargs), write=False)

    async def _submit(
        self, fn: Callable[[Connection], T], *, write: bool, merge: Merge | None = None, item: Any = None
    ) -> T:
        """``fn`` through the group committer (with ``merge``: as one of a merged run, see
        :meth:`GroupCommitter.run_merged`), SQLAlchemy's errors translated to
        :class:`~delivery_daemon.storage.jobs.QueueError`."""
        try:
            if merge is not None:
                return await self.committer.run_merged(fn, merge, item)
            return await self.committer.run(fn, write=write)
        except SQLAlchemyError as exc:
            raise queue_error(exc) from exc

    # -- enqueue ---------------------------------------------------------------------------------------------

    async def enqueue(self, order: IncomingOrder, lease: Lease | None = None) -> Enqueued:
        """Commit ``order`` as a queued job (``held`` when ``order.held`` says why); a second call for the same
        (store, order_id) changes nothing else. With ``lease``, a new job that is not held is committed running and
        leased instead, and returned in :attr:`Enqueued.job` for its owner to process without a claim; its
        ``lease.taken`` is called with it as soon as it is inserted, before the commit.

        Enqueues waiting together share one multi-row INSERT (see :meth:`GroupCommitter.run_merged`)."""
        if lease is not None and lease.taken is not None:  # called from the database thread: onto our loop
            loop, taken = asyncio.get_running_loop(), lease.taken

            def on_loop(job: Job) -> None:
                loop.call_soon_threadsafe(taken, job)

            lease = dataclasses.replace(lease, taken=on_loop)
        return await self._submit(
            lambda conn: self._enqueuer.one(conn, order, lease),
            write=True,
            merge=self._enqueuer.many,
            item=(order, lease),
        )

    # -- claim -----------------------------------------------------------------------------------------------

    async def claim(self, owner: str, lease_seconds: float, limit: int) -> list[Job]:
        """Lease up to ``limit`` due jobs to ``owner`` in one statement, oldest due first."""
        if limit <= 0:
            return []
        return await self._run(self._leases.claim, owner, lease_seconds, limit)

    async def release_expired(self) -> int:
        """Put jobs whose lease ran out (their worker died) back in the queue — or cancel them if a refund or dispute
        is pending on them (see :mod:`~delivery_daemon.storage.leases`); returns how many were released."""
        return await self._run(self._leases.release_expired)

    async def release_owned(self, owner: str) -> int:
        """Hand back every job ``owner`` still holds (graceful shutdown; one with a pending refund is cancelled)."""
        return await self._run(self._leases.release_owned, owner)

    async def renew_leases(self, owner: str, lease_seconds: float, job_ids: Collection[int] | None = None) -> int:
        """Extend the leases ``owner`` holds on ``job_ids`` (on every job it holds when None): a live worker keeps
        the jobs it works on however long a step takes. The worker names its jobs in flight, so that a job no task
        works on any more (its outcome could not be saved) is not kept leased and comes back when its lease ends."""
        if job_ids is not None and not job_ids:
            return 0
        return await self._run(self._leases.renew, owner, lease_seconds, job_ids)

    # -- transitions of a leased job ---------------------------------------------------------------------------

    async def _leased(
        self, job: Job, owner: str, values: dict[str, Any], changes: Sequence[Transition], count_attempt: bool = False
    ) -> Settled | None:
        """:meth:`Transitions.update_leased` on the database thread; calls of one shape waiting together are
        merged (see :meth:`Transitions.merge`)."""
        assert job.id is not None, "a leased job has been stored"
        return await self._submit(
            lambda conn: self._transitions.update_leased(conn, job, owner, values, changes, count_attempt),
            write=True,
            merge=self._transitions.merge(values, count_attempt),
            item=LeasedChange(job.id, owner, values, changes),
        )

    @staticmethod
    def _before_sending(settled: Settled | None) -> None:
        if settled is not None:
            raise OrderCancelled(settled)

    async def save_verification(
        self, job: Job, owner: str, quantity: int, buyer_email: str | None, duration_ms: float
    ) -> None:
        """Store what the marketplace confirmed (the quantity comes only from here); :class:`OrderCancelled` if a
        refund or dispute was pending (stored too, and the job is cancelled)."""
        change = Transition(JobState.RUNNING, "verify", "ok", duration_ms=duration_ms)
        self._before_sending(
            await self._leased(job, owner, {"quantity": quantity, "buyer_email": buyer_email}, [change])
        )

    async def save_content(
        self, job: Job, owner: str, content: str, duration_ms: float, *, verified: Verified | None = None
    ) -> None:
        """Store the generated content; it is never generated again for this job.

        With ``verified``, what the marketplace confirmed is stored in the same transaction (and both steps are
        recorded): the worker's hot path saves verification and content with one commit instead of two.
        :class:`OrderCancelled` if a refund or dispute was pending (all is stored, and the job is cancelled).
        """
        values: dict[str, Any] = {"content": seal(self.cipher, job.store, job.order_id, "content", content)}
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

    async def note(self, job: Job, change: Transition) -> None:
        """Record the outcome of a step run after delivery (:mod:`~delivery_daemon.storage.followups`); the job is
        not changed and needs no lease."""
        assert job.id is not None, "a delivered job has been stored"
        await self._run(note, job.id, change, self.clock.now())

    async def follow_ups(self, stores: Collection[str], step: str, limit: int = 100) -> list[Pending]:
        """Delivered jobs of ``stores`` whose after-delivery ``step`` has not finished (see
        :func:`~delivery_daemon.storage.followups.pending`)."""
        return await self._read(pending, stores, step, limit, self.cipher)

    # -- operator and wake-up transitions ---------------------------------------------------------------------

    async def wake_waiting(self, store: str, product_id: str) -> list[int]:
        """Requeue the jobs waiting for stock of one product (after a refill)."""
        return await self._run(self._transitions.wake_waiting, store, product_id)

    async def retry(self, job_id: int) -> bool:
        """:func:`~delivery_daemon.storage.transitions.operator_requeue` ``retry`` (the status page's button); True
        if the job moved."""
        return await self._run(operator_requeue, job_id, "retry", self.clock.now())

    async def claim_order(
        self, store: str, order_id: str, owner: str, lease_seconds: float, from_states: Sequence[str] = RUNNABLE
    ) -> Job | None:
        """Lease one named order to ``owner`` if it is in one of ``from_states``; None if it is not (e.g. a worker
        holds it, or it is final)."""
        return await self._run(self._leases.claim_order, store, order_id, owner, lease_seconds, from_states)

    def _enqueue_leased(
        self, conn: Connection, order: IncomingOrder, owner: str, lease_seconds: float, from_states: Sequence[str]
    ) -> Job | None:
        self._enqueuer.one(conn, order)
        return self._leases.claim_order(
            conn, order.store, order.order_id, owner, lease_seconds, from_states, without_content=True
        )

    async def enqueue_leased(
        self, order: IncomingOrder, owner: str, lease_seconds: float, from_states: Sequence[str]
    ) -> Job | None:
        """Commit ``order`` as :meth:`enqueue` does and, in the same transaction, lease it to ``owner`` if it is in
        one of ``from_states`` and has no content yet; None if not. A worker never sees the new job unleased: a
        synchronous answer (Sellix dynamic products) must not race a worker delivering it through the channel."""
        return await self._run(self._enqueue_leased, order, owner, lease_seconds, from_states)

    async def mark(self, order: MarkedOrder) -> str:
        """Apply a refund or dispute to an order in one transaction and record it in the order's history.

        Returns ``cancelled`` (not leased and not delivered: nothing will be sent), ``cancelled_unseen`` (unknown
        order, remembered cancelled), ``already_cancelled``, ``flagged`` (already delivered: ``flag`` and
        ``last_error`` say why, the job stays delivered) or ``pending`` (a worker holds the job: the lease is not
        taken, the worker settles it — see :meth:`transition`).
        """
        return await self._run(self._transitions.mark, order)

    async def redeliver(self, job_id: int) -> bool:
        """:func:`~delivery_daemon.storage.transitions.operator_requeue` ``redeliver``: send a delivered job's stored
        content again (never regenerated). True if it moved (only a delivered job with content does)."""
        return await self._run(operator_requeue, job_id, "redeliver", self.clock.now())

    # -- revocations (see delivery_daemon.storage.revocations) --------------------------------------------------

    async def claim_revocations(self, owner: str, lease_seconds: float, limit: int) -> list[Claimed]:
        """Lease up to ``limit`` due revocations to ``owner``, with their jobs and revoked contents in plaintext."""
        return await self._run(claim_revocations, owner, lease_seconds, limit, self.clock.now(), self.cipher)

    async def save_revocation(self, revocation_id: int, owner: str, values: dict[str, Any], change: Transition) -> bool:
        """Write a step of a leased revocation and record it in its order's history; False if the lease was lost."""
        return await self._run(save_revocation, revocation_id, owner, values, change, self.clock.now())

    async def revocations(self, job_id: int) -> list[Revocation]:
        """Every revocation of job ``job_id``, oldest first (content still sealed)."""
        return await self._read(read_revocations, job_id)

    async def revocation_counts(self) -> dict[str, int]:
        """Revocations per state."""
        return await self._read(count_revocations)

    async def revoked_hashes(self, store: str, product_id: str) -> list[str]:
        """SHA-256 hex of every key revoked for ``product_id`` of ``store`` (a signed revocation list's entries)."""
        return await self._read(revoked_hashes, store, product_id)

    # -- reads -----------------------------------------------------------------------------------------------

    async def get(self, job_id: int) -> Job | None:
        return await self._read(get_job, job_id, self.cipher)

    async def find(self, store: str, order_id: str) -> Job | None:
        return await self._read(find_job, store, order_id, self.cipher)

    async def history(self, job_id: int) -> list[Attempt]:
        return await self._read(read_history, job_id)

    async def counts(self) -> dict[str, int]:
        """Jobs per state (every state present, zero when empty)."""
        return await self._read(count_states)

    async def next_due(self) -> float | None:
        """The earliest due time of a runnable job, if any."""
        return await self._read(next_due)

    def _writable(self, conn: Connection) -> None:
        conn.execute(text("SELECT 1"))

    async def check_writable(self) -> None:
        """Take (and release) the write lock; raises QueueError if the database cannot be written."""
        await self._run(self._writable)


__all__ = ["JobQueue"]
