"""The operator's view of the queue: find, list and act on orders in the database, while the daemon runs or not.

Every action is one transaction that moves a job only if it is still in a state the action allows (the ``WHERE``
names the states), and records an :class:`~delivery_daemon.storage.models.Attempt` with step ``admin`` — so an action
can never race the worker into a double delivery: a running job holds a lease and is refused here. A running daemon
picks a requeued job up at its next poll (``worker.poll_interval``), with no signal needed.

What each action does:

* ``retry`` — a dead, waiting, cancelled, held or retry-waiting job is queued now with a fresh retry schedule. Steps
  that already succeeded are not repeated (stored content is sent as stored; it is never generated twice). A held
  job is checked again: it is held again unless its cause was fixed (e.g. the buyer email at the marketplace).
* ``redeliver`` — a delivered job is queued to send its stored content again. Whether the buyer gets it depends on
  the marketplace (SoftStore answers ``409 Order already delivered``; see :data:`REDELIVERY_NOTES`). A content that
  was revoked, refunded or disputed is never sent again.
* ``cancel`` — a job that is not running and not delivered is never attempted again.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, and_, insert, or_, select, update
from sqlalchemy.engine import Connection

from delivery_daemon.clock import Clock
from delivery_daemon.errors import DeliveryDaemonError
from delivery_daemon.storage.jobs import ATTEMPTS, JOBS, row_to_job
from delivery_daemon.storage.models import Attempt, Job, JobState, Revocation
from delivery_daemon.storage.reads import read_history
from delivery_daemon.storage.revocations import open_revocation, read_revocations
from delivery_daemon.storage.transitions import OPERATOR_RETRYABLE, OperatorAction, operator_requeue

CANCELLABLE = (
    JobState.QUEUED.value,
    JobState.RETRY_WAIT.value,
    JobState.WAITING.value,
    JobState.DEAD.value,
    JobState.HELD.value,
)

REDELIVERY_NOTES: dict[str, str] = {
    "softstore": (
        "SoftStore accepts one delivery per order: a second POST to the delivery URL answers "
        "409 'Order already delivered', which the daemon records as outcome 'already'. The buyer gets nothing new; "
        "the delivered text stays on the buyer's SoftStore order page. To hand it over yourself, use "
        "'orders show ID --reveal'."
    ),
}
"""What each marketplace answers to a second delivery of the same order (shown by ``orders redeliver``)."""

DEFAULT_REDELIVERY_NOTE = "This marketplace's answer to a second delivery is not documented; check 'orders show ID'."


class OrderNotFound(DeliveryDaemonError):
    """No order matched the reference the operator gave."""


class AmbiguousOrder(DeliveryDaemonError):
    """The reference matches orders in more than one store; ``--store`` or the job number picks one."""


class ActionRefused(DeliveryDaemonError):
    """The order is in a state where the action does not apply; the message says why and what to do."""


@dataclass(frozen=True)
class OrderFilter:
    """Criteria for :meth:`Orders.search`; ``None`` means "any"."""

    state: str | None = None
    store: str | None = None
    product: str | None = None
    since: float | None = None
    limit: int = 50


class Orders:
    """Synchronous operator actions on the jobs and attempts tables (for the CLI, one short process)."""

    def __init__(self, engine: Engine, clock: Clock) -> None:
        self.engine = engine
        self.clock = clock

    # -- reads -----------------------------------------------------------------------------------------------

    def search(self, criteria: OrderFilter) -> list[Job]:
        """Orders matching ``criteria``, newest first."""
        conditions = []
        if criteria.state is not None:
            conditions.append(JOBS.c.state == criteria.state)
        if criteria.store is not None:
            conditions.append(JOBS.c.store == criteria.store)
        if criteria.product is not None:
            conditions.append(JOBS.c.product_id == criteria.product)
        if criteria.since is not None:
            conditions.append(JOBS.c.created_at >= criteria.since)
        statement = select(JOBS).where(and_(True, *conditions))
        statement = statement.order_by(JOBS.c.created_at.desc(), JOBS.c.id.desc()).limit(criteria.limit)
        with self.engine.connect() as conn:
            return [row_to_job(row) for row in conn.execute(statement)]

    def resolve(self, ref: str, store: str | None = None) -> Job:
        """The one order ``ref`` names: a marketplace order id (narrowed by ``store``) or ``#N`` for job N."""
        if ref.startswith("#") and ref[1:].isdigit():
            where = JOBS.c.id == int(ref[1:])
        else:
            where = JOBS.c.order_id == ref
            if ref.isdigit():  # a bare number may also be a job number; an order id match wins below
                where = or_(where, JOBS.c.id == int(ref))
        if store is not None:
            where = and_(where, JOBS.c.store == store)
        with self.engine.connect() as conn:
            jobs = [row_to_job(row) for row in conn.execute(select(JOBS).where(where).order_by(JOBS.c.id))]
        by_order_id = [job for job in jobs if job.order_id == ref]
        jobs = by_order_id or jobs
        if not jobs:
            scope = f" in store {store!r}" if store else ""
            raise OrderNotFound(f"no order {ref!r}{scope}")
        if len(jobs) > 1:
            which = ", ".join(f"#{job.id} ({job.store})" for job in jobs)
            raise AmbiguousOrder(f"order {ref!r} exists in several stores: {which}; pass --store or #JOB")
        return jobs[0]

    def history(self, job_id: int) -> list[Attempt]:
        """Every recorded attempt and state change of a job, oldest first."""
        with self.engine.connect() as conn:
            return read_history(conn, job_id)

    def revocations(self, job_id: int) -> list[Revocation]:
        """Every revocation of a job, oldest first (content still sealed)."""
        with self.engine.connect() as conn:
            return read_revocations(conn, job_id)

    # -- actions ---------------------------------------------------------------------------------------------

    def retry(self, ref: str, store: str | None = None) -> Job:
        """Queue a dead, waiting, retry-waiting, held or cancelled order now, with a fresh retry schedule."""
        job = self.resolve(ref, store)
        if job.state not in OPERATOR_RETRYABLE:
            hint = {
                JobState.DELIVERED.value: "it is delivered; use 'orders redeliver' to send it again",
                JobState.QUEUED.value: "it is already queued",
                JobState.RUNNING.value: "it is being processed right now",
            }.get(job.state, "")
            raise ActionRefused(f"order {job.order_id} is {job.state}: {hint}".rstrip(": "))
        return self._move(job, "retry")

    def retry_all_dead(self) -> list[int]:
        """Queue every dead order now; returns the job ids that moved (empty when there were none)."""
        now = self.clock.now()
        with self.engine.begin() as conn:
            ids = (
                conn.execute(select(JOBS.c.id).where(JOBS.c.state == JobState.DEAD.value).order_by(JOBS.c.id))
                .scalars()
                .all()
            )
            return [
                job_id for job_id in ids if operator_requeue(conn, job_id, "retry", now, only=(JobState.DEAD.value,))
            ]

    def redeliver(self, ref: str, store: str | None = None) -> Job:
        """Queue a delivered order to send its stored content again (see :data:`REDELIVERY_NOTES`)."""
        job = self.resolve(ref, store)
        if job.state != JobState.DELIVERED.value:
            raise ActionRefused(f"order {job.order_id} is {job.state}, not delivered; use 'orders retry'")
        if job.content is None:
            raise ActionRefused(f"order {job.order_id}: its delivered content was purged by the retention policy")
        if job.flag is not None:
            raise ActionRefused(f"order {job.order_id} was {job.flag}: its keys were taken back and are not sent again")
        if any(revocation.issue == job.issue for revocation in self.revocations(job.id or 0)):
            raise ActionRefused(
                f"order {job.order_id}: its content is revoked and is not sent again; 'orders reissue' sends new keys"
            )
        return self._move(job, "redeliver")

    def cancel(self, ref: str, store: str | None = None) -> Job:
        """Never attempt this order again (it stays in the database, state ``cancelled``)."""
        job = self.resolve(ref, store)
        if job.state not in CANCELLABLE:
            why = {
                JobState.RUNNING.value: "it is being processed right now; try again in a moment",
                JobState.DELIVERED.value: "it was delivered already",
                JobState.CANCELLED.value: "it is already cancelled",
            }.get(job.state, job.state)
            raise ActionRefused(f"order {job.order_id} cannot be cancelled: {why}")
        now = self.clock.now()
        with self.engine.begin() as conn:
            moved = conn.execute(
                update(JOBS)
                .where(and_(JOBS.c.id == job.id, JOBS.c.state.in_(CANCELLABLE)))
                .values(state=JobState.CANCELLED.value, updated_at=now)
            ).rowcount
            if moved != 1:
                raise ActionRefused(f"order {job.order_id} changed state meanwhile; look again")
            assert job.id is not None
            self._record(conn, job.id, JobState.CANCELLED, "cancelled", now)
            open_revocation(conn, job.id, "cancelled", now)  # a stored content is taken back (or given back)
        return self.resolve(f"#{job.id}")

    def _delivered(self, conn: Connection, job: Job, action: str) -> None:
        """Lock ``job``'s row and refuse ``action`` unless it is still delivered with its content stored."""
        row = conn.execute(select(JOBS.c.state, JOBS.c.content).where(JOBS.c.id == job.id).with_for_update()).first()
        if row is None or row.state != JobState.DELIVERED.value:
            state = row.state if row is not None else "gone"
            raise ActionRefused(f"order {job.order_id} is {state}, not delivered: there is nothing to {action}")
        if row.content is None:
            raise ActionRefused(
                f"order {job.order_id}: no content is stored (purged by the retention policy, or revoked and not "
                f"delivered again): there is nothing to {action}"
            )

    def revoke(self, ref: str, store: str | None = None) -> Job:
        """Revoke a delivered order's content: a pending revocation is committed, and the worker calls the product's
        generator hook and sends the channel's ``order.revoked`` event. The order stays delivered."""
        job = self.resolve(ref, store)
        assert job.id is not None
        with self.engine.begin() as conn:
            self._delivered(conn, job, "revoke")
            if not open_revocation(conn, job.id, "revoked", self.clock.now()):
                raise ActionRefused(f"order {job.order_id}: its content is revoked already (see 'orders show')")
        return self.resolve(f"#{job.id}")

    def reissue(self, ref: str, store: str | None = None) -> Job:
        """Revoke a delivered order's content and queue the order to get a new one, generated and delivered through
        the store's channel like a first delivery (the old content stays in the revocation, in the history).

        Refused for a refunded or disputed order: its buyer got the money back."""
        job = self.resolve(ref, store)
        assert job.id is not None
        now = self.clock.now()
        with self.engine.begin() as conn:
            self._delivered(conn, job, "re-issue")
            if job.flag is not None:
                raise ActionRefused(f"order {job.order_id} was {job.flag}: it gets no new key")
            open_revocation(conn, job.id, "reissued", now, reissue=True)
            conn.execute(
                update(JOBS)
                .where(JOBS.c.id == job.id)
                .values(state=JobState.QUEUED.value, due_at=now, updated_at=now, attempts=0, last_error=None)
            )
            self._record(conn, job.id, JobState.QUEUED, "reissue", now)
        return self.resolve(f"#{job.id}")

    # -- helpers ---------------------------------------------------------------------------------------------

    def _move(self, job: Job, action: OperatorAction) -> Job:
        # The same transition as the status page's buttons (JobQueue.retry/redeliver): transitions.operator_requeue.
        assert job.id is not None
        with self.engine.begin() as conn:
            if not operator_requeue(conn, job.id, action, self.clock.now()):
                raise ActionRefused(f"order {job.order_id} changed state meanwhile; look again")
        return self.resolve(f"#{job.id}")

    @staticmethod
    def _record(conn: Connection, job_id: int, state: JobState, outcome: str, now: float) -> None:
        conn.execute(insert(ATTEMPTS).values(job_id=job_id, at=now, step="admin", outcome=outcome, state=state.value))


def redelivery_note(marketplace: str) -> str:
    """What ``marketplace`` answers to a second delivery of one order."""
    return REDELIVERY_NOTES.get(marketplace, DEFAULT_REDELIVERY_NOTE)
