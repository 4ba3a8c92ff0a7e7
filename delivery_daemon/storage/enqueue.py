"""The SQL of :meth:`JobQueue.enqueue <delivery_daemon.storage.queue.JobQueue.enqueue>`: a paid order becomes a job.

Uniqueness is the database's job: ``INSERT … ON CONFLICT DO NOTHING`` on (store, order_id); a second webhook for an
order only counts itself in ``jobs.received``.

An enqueue given a :class:`~delivery_daemon.storage.jobs.Lease` inserts the new job already running and leased to its
owner, in the same transaction: the receiver hands it to its own worker, which then needs no claim (a transaction
and a commit fewer on the way to the buyer; issue #26). The lease fences it like any claimed job's: if that worker
dies, the lease expires and any replica queues the job again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import and_, bindparam, update
from sqlalchemy.engine import Connection, RowMapping

from delivery_daemon.clock import Clock
from delivery_daemon.order import IncomingOrder
from delivery_daemon.storage import dialect
from delivery_daemon.storage.cipher import Cipher
from delivery_daemon.storage.jobs import (
    JOBS,
    Enqueued,
    Lease,
    Transition,
    attempt_row,
    record,
    record_many,
    row_to_job,
    seal,
)
from delivery_daemon.storage.models import JobState
from delivery_daemon.storage.prepared import Prepared

_ACCEPTED = Transition(JobState.QUEUED, "receive", "accepted")


def received(order: IncomingOrder) -> Transition:
    """The first recorded step of a new job: accepted, or held with the receiver's reason."""
    return _ACCEPTED if order.held is None else Transition(JobState.HELD, "receive", "held", error=order.held)


def _row(order: IncomingOrder, lease: Lease | None, now: float, payload: str) -> dict[str, Any]:
    """The ``jobs`` row an enqueue inserts for ``order`` (``payload`` as it is stored; ``lease`` None unless the new
    job is to be leased: see :func:`_leased`)."""
    return {
        "store": order.store,
        "order_id": order.order_id,
        "marketplace": order.marketplace,
        "product_id": order.product_id,
        "state": JobState.RUNNING.value if lease else received(order).state.value,
        "lease_owner": lease.owner if lease else None,
        "lease_until": now + lease.seconds if lease else None,
        "payload": payload,
        "attempts": 0,
        "received": 1,
        "due_at": now,
        "created_at": now,
        "updated_at": now,
        "last_error": order.held,
    }


def _leased(order: IncomingOrder, lease: Lease | None) -> Lease | None:
    """The lease a new job of ``order`` is inserted with: none for a held order (it must not run)."""
    return lease if order.held is None else None


class Enqueue:
    """Enqueue statements for one database (``dialect_name``), run on the queue's database thread."""

    def __init__(self, dialect_name: str, clock: Clock, cipher: Cipher | None) -> None:
        self.clock = clock
        self.cipher = cipher
        self._dialect = dialect_name
        # Built once and executed with parameters: rebuilding them with .values(**row) for every order cost more
        # CPU on the database thread than the SQL itself (py-spy: statement construction and cache-key generation).
        # Only a leased insert returns the whole row (its job is handed over); the others return what they did
        # before the hand-off existed, so a receiver-only daemon's hot path is unchanged.
        inserted = self._insert_ignore().on_conflict_do_nothing(index_elements=["store", "order_id"])
        self._insert_job = Prepared(inserted.returning(JOBS.c.id))
        self._insert_jobs_keyed = inserted.returning(JOBS.c.id, JOBS.c.store, JOBS.c.order_id)
        self._insert_leased = Prepared(inserted.returning(*JOBS.c))
        self._count_duplicate = (
            update(JOBS)
            .where(and_(JOBS.c.store == bindparam("b_store"), JOBS.c.order_id == bindparam("b_order_id")))
            .values(received=JOBS.c.received + 1)
            .returning(JOBS.c.id)
        )

    def _insert_ignore(self) -> Any:
        return dialect.insert(self._dialect, JOBS)

    def _job_row(self, order: IncomingOrder, lease: Lease | None, now: float) -> dict[str, Any]:
        payload = seal(self.cipher, order.store, order.order_id, "payload", order.payload_json())
        return _row(order, lease, now, payload)

    def one(self, conn: Connection, order: IncomingOrder, lease: Lease | None = None) -> Enqueued:
        """Insert ``order``'s job (leased to ``lease``'s owner when given, unless the order is held), or count a
        duplicate."""
        now, lease = self.clock.now(), _leased(order, lease)
        statement = self._insert_job if lease is None else self._insert_leased
        row = statement.execute(conn, self._job_row(order, lease, now)).first()
        if row is not None:
            record(conn, row["id"], received(order), now)
            return self._created(row, lease)
        return self._duplicate(conn, order)

    def _created(self, row: Mapping[str, Any] | RowMapping, lease: Lease | None) -> Enqueued:
        """The result for a new ``row`` (its columns by name); with ``lease`` (it was inserted leased), its job,
        given to ``lease.taken``."""
        if lease is None:
            return Enqueued(job_id=row["id"], created=True)
        job = row_to_job(row, self.cipher)
        if lease.taken is not None:
            lease.taken(job)
        return Enqueued(job_id=row["id"], created=True, job=job)

    def _duplicate(self, conn: Connection, order: IncomingOrder) -> Enqueued:
        job_id = conn.execute(
            self._count_duplicate, {"b_store": order.store, "b_order_id": order.order_id}
        ).scalar_one()
        return Enqueued(job_id=job_id, created=False)

    def many(self, conn: Connection, items: list[tuple[IncomingOrder, Lease | None]]) -> list[Enqueued]:
        """What :meth:`one` does for each (order, lease), in order, with one multi-row ``INSERT … ON CONFLICT DO
        NOTHING RETURNING`` for the jobs and one for their attempts (profile: per-row INSERTs and savepoints were
        most of the database thread's CPU under a webhook burst)."""
        now, items = self.clock.now(), [(order, _leased(order, lease)) for order, lease in items]
        statement = (
            self._insert_jobs_keyed if all(lease is None for _, lease in items) else self._insert_leased.statement
        )
        rows = conn.execute(statement, [self._job_row(order, lease, now) for order, lease in items])
        new = {(row.store, row.order_id): row._mapping for row in rows.all()}
        results: list[Enqueued] = []
        for order, lease in items:
            row = new.pop((order.store, order.order_id), None)  # popped: the same order again is a duplicate
            results.append(self._created(row, lease) if row is not None else self._duplicate(conn, order))
        accepted = [
            attempt_row(r.job_id, received(order), now)
            for r, (order, _lease) in zip(results, items, strict=True)
            if r.created
        ]
        record_many(conn, accepted)
        return results
