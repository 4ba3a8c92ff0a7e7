"""The jobs and attempts tables as the job queue writes them: the values its operations take and return, its errors,
and the row helpers every queue module shares (:mod:`~delivery_daemon.storage.queue` is the facade).

Columns :data:`SEALED` are encrypted at rest when the queue has a cipher: :func:`seal` before a write,
:func:`row_to_job` opens them on the way out, so a :class:`~delivery_daemon.storage.models.Job` in memory holds
plaintext. Every step and state change is one ``attempts`` row (:func:`record`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import SQLAlchemyError

from delivery_daemon.errors import DeliveryDaemonError
from delivery_daemon.storage.cipher import Cipher
from delivery_daemon.storage.models import Attempt, Job, JobState, from_row, table_of
from delivery_daemon.storage.prepared import Prepared

SEALED = ("payload", "content")
"""Columns encrypted at rest when the queue has a cipher: the delivery token lives in one, the keys in the other."""

JOBS = table_of(Job)
ATTEMPTS = table_of(Attempt)


class QueueError(DeliveryDaemonError):
    """The database failed underneath the queue (translated from SQLAlchemy)."""


class LeaseLost(DeliveryDaemonError):
    """The job is no longer ours: its lease expired and another worker (or an operator) took it."""


@dataclass(frozen=True)
class Lease:
    """Who a job is leased to and for how long (seconds from the write that takes it).

    ``taken``, given to an enqueue, is called with the new job once its row is inserted, before the commit (which
    may still fail), on the enqueuing caller's event loop, before the enqueue returns; never for a duplicate or a
    held order."""

    owner: str
    seconds: float
    taken: Callable[[Job], None] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Enqueued:
    job_id: int
    created: bool
    job: Job | None = None
    """The new job, leased and running, when the enqueue was given a :class:`Lease` and the order is not held (the
    receiver hands it to its own worker: no claim, no second transaction); otherwise None."""


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


_RECORD = Prepared(insert(ATTEMPTS))


def attempt_row(job_id: int, change: Transition, now: float) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "at": now,
        "step": change.step,
        "outcome": change.outcome,
        "state": change.state.value,
        "http_status": change.http_status,
        "error": change.error,
        "duration_ms": change.duration_ms,
    }


def record(conn: Connection, job_id: int, change: Transition, now: float) -> None:
    """Add ``change`` to job ``job_id``'s history (in ``conn``'s transaction)."""
    _RECORD.execute(conn, attempt_row(job_id, change, now))


def record_many(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Add several :func:`attempt_row` rows to the history at once (in ``conn``'s transaction)."""
    if rows:
        _RECORD.execute_many(conn, rows)


def queue_error(exc: SQLAlchemyError) -> QueueError:
    """SQLAlchemy's error as the queue's: its class and what that class means, not its SQL or parameters."""
    return QueueError(f"database error: {type(exc).__name__}: {exc.__class__.__doc__ or ''}".strip())


def seal(cipher: Cipher | None, store: str, order_id: str, column: str, value: str) -> str:
    """``value`` as stored in ``column`` of the order's job: sealed when there is a cipher."""
    return value if cipher is None else cipher.seal(value, f"{store}/{order_id}/{column}")


def row_to_job(row: Any, cipher: Cipher | None = None) -> Job:
    """The job of a ``jobs`` row: a SQLAlchemy row or a mapping of every column (:class:`Prepared`'s rows)."""
    values = dict(row._mapping) if isinstance(row, Row) else dict(row)
    if cipher is not None:  # sealed at rest, plaintext in memory (see delivery_daemon.storage.cipher)
        for column in SEALED:
            if values.get(column) is not None:
                values[column] = cipher.open(values[column], f"{values['store']}/{values['order_id']}/{column}")
    return from_row(Job, values)
