"""The tables. The database is the source of truth for every order the daemon has accepted.

``jobs`` holds one row per (store, order_id) — the unique constraint, not application code, makes a resent webhook
a no-op. ``attempts`` is the order's history: every step outcome and state change, with time, HTTP status and error.
Times are epoch seconds (floats) so the schema stays portable between SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import Column, Index, Integer, Table, Text, UniqueConstraint
from sqlalchemy.orm import configure_mappers
from sqlalchemy.orm.attributes import manager_of_class
from sqlmodel import Field, SQLModel

from delivery_daemon.order import LIMITS

TableModel = TypeVar("TableModel", bound=SQLModel)


class JobState(StrEnum):
    """Where a job stands. ``running`` always carries a lease (owner and expiry)."""

    QUEUED = "queued"
    RUNNING = "running"
    RETRY_WAIT = "retry_wait"
    WAITING = "waiting"  # the generator is out of stock; woken by a refill
    HELD = "held"  # must not go out as it stands (last_error says why); the operator retries or cancels it
    DELIVERED = "delivered"
    DEAD = "dead"
    CANCELLED = "cancelled"


RUNNABLE = (JobState.QUEUED.value, JobState.RETRY_WAIT.value)
FINAL = (JobState.DELIVERED.value, JobState.DEAD.value, JobState.CANCELLED.value)


class Job(SQLModel, table=True):
    """One accepted order and everything needed to finish it."""

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("store", "order_id", name="uq_jobs_store_order"),
        Index("ix_jobs_state_due", "state", "due_at"),
        Index("ix_jobs_state_lease", "state", "lease_until"),
    )

    id: int | None = Field(default=None, primary_key=True)
    store: str = Field(max_length=LIMITS["store"])
    order_id: str = Field(max_length=LIMITS["order_id"])
    marketplace: str = Field(max_length=LIMITS["marketplace"])
    product_id: str = Field(max_length=LIMITS["product_id"])
    state: str = Field(default=JobState.QUEUED.value, max_length=16)
    # The marketplace-specific data the adapter needs later (e.g. SoftStore's delivery_url and token), as JSON.
    payload: str = Field(sa_type=Text)
    quantity: int | None = None
    buyer_email: str | None = Field(default=None, max_length=LIMITS["buyer_email"])
    # Stored once, before the first delivery attempt; every retry sends exactly these bytes.
    content: str | None = Field(default=None, sa_type=Text)
    attempts: int = 0
    received: int = 1
    due_at: float
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_until: float | None = None
    last_error: str | None = Field(default=None, sa_type=Text)
    created_at: float
    updated_at: float
    delivered_at: float | None = None
    # "refunded" | "disputed": the marketplace reported it while the job was leased (pending: the worker settles it,
    # see JobQueue.transition) or after delivery (delivered and flagged: a refunded buyer holds the keys). NULL on
    # every other job (a cancelled one says why in last_error).
    flag: str | None = Field(default=None, max_length=16)
    # How many contents the order has had before this one (0: the first). An operator's re-issue, or a cancellation
    # that gave back a content never sent, clears ``content`` and adds one, so the next one is a new issue.
    # The database's default, not the model's: rows written without it (an older schema's INSERTs) still work.
    issue: int = Field(default=0, sa_column=Column("issue", Integer, nullable=False, server_default="0"))


class Attempt(SQLModel, table=True):
    """One recorded step outcome or state change of a job."""

    __tablename__ = "attempts"
    # The after-delivery sweep's "which jobs finished this step" (storage.followups), without scanning the history.
    __table_args__ = (Index("ix_attempts_step_outcome", "step", "outcome", "job_id"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="jobs.id", index=True)
    at: float
    step: str = Field(max_length=16)  # receive | verify | generate | deliver | lease | admin | event
    outcome: str = Field(max_length=32)  # e.g. accepted, ok, retry, dead, delivered, waiting, released
    state: str = Field(max_length=16)  # the job's state after this attempt
    http_status: int | None = None
    error: str | None = Field(default=None, sa_type=Text)
    duration_ms: float | None = None


class RevocationState(StrEnum):
    """Where a revocation stands: ``pending`` (due at ``due_at``), ``running`` (leased), ``done`` or ``dead``."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    DEAD = "dead"


class Revocation(SQLModel, table=True):
    """One content of an order to take back (see :mod:`delivery_daemon.storage.revocations`): written in the
    transaction that refunded, disputed, cancelled or revoked the order, run by the worker until done or dead."""

    __tablename__ = "revocations"
    __table_args__ = (
        UniqueConstraint("job_id", "issue", name="uq_revocations_job_issue"),
        Index("ix_revocations_state_due", "state", "due_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="jobs.id")
    issue: int  # the job's ``issue`` whose content this revokes
    reason: str = Field(max_length=16)  # refunded | disputed | cancelled | revoked | reissued
    # False only when no delivery attempt was ever made with this content: a stock key goes back to the pool, and
    # no ``order.revoked`` event is sent (nobody was told about the order).
    sent: bool
    content: str | None = Field(default=None, sa_type=Text)  # sealed like jobs.content, with the job's context
    key_hashes: str | None = Field(default=None, sa_type=Text)  # JSON list of SHA-256 hex of the revoked keys
    state: str = Field(default=RevocationState.PENDING.value, max_length=16)
    attempts: int = 0
    due_at: float
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_until: float | None = None
    hook_done_at: float | None = None  # the generator's hook succeeded (or the generator has none): never again
    notified_at: float | None = None  # the channel's order.revoked event was accepted (or there is none to send)
    last_error: str | None = Field(default=None, sa_type=Text)
    created_at: float
    updated_at: float


class WebhookEvent(SQLModel, table=True):
    """A marketplace event id already handled for a store (Stripe ``evt_…``, Standard Webhooks ``webhook-id``).

    The unique constraint makes a resent event a duplicate; rows older than the retention are pruned.
    """

    __tablename__ = "webhook_events"
    __table_args__ = (UniqueConstraint("store", "event_id", name="uq_webhook_events_store_event"),)

    id: int | None = Field(default=None, primary_key=True)
    store: str = Field(max_length=LIMITS["store"])
    event_id: str = Field(max_length=LIMITS["event_id"])
    received_at: float = Field(index=True)


class WatchdogCursor(SQLModel, table=True):
    """How far the missed-order watchdog has looked at a store's order list (one row per store).

    ``since`` is the creation time (unix seconds) from which the next run lists paid orders: a run that listed every
    page moves it forward, so a run costs the orders placed since the last one, not the store's whole history.
    """

    __tablename__ = "watchdog_cursors"

    store: str = Field(primary_key=True, max_length=LIMITS["store"])
    since: float
    updated_at: float


class MissedOrder(SQLModel, table=True):
    """A paid order the marketplace lists that has no job and that the daemon cannot deliver without its webhook
    (SoftStore: the delivery token is only in the webhook): the seller must act. One row per (store, order_id), so
    a later run raises it once; it stops being open as soon as a job for the order exists (a late webhook)."""

    __tablename__ = "missed_orders"
    __table_args__ = (UniqueConstraint("store", "order_id", name="uq_missed_orders_store_order"),)

    id: int | None = Field(default=None, primary_key=True)
    store: str = Field(max_length=LIMITS["store"])
    order_id: str = Field(max_length=LIMITS["order_id"])
    marketplace: str = Field(max_length=LIMITS["marketplace"])
    product_id: str = Field(max_length=LIMITS["product_id"])
    placed_at: float
    """When the marketplace says the order was placed."""
    found_at: float = Field(index=True)
    """When the watchdog first found it."""
    reason: str = Field(sa_type=Text)
    """Why the daemon could not queue it, for the seller."""


def table_of(model: type[SQLModel]) -> Table:
    """The table of ``model`` (a ``table=True`` model), for SQLAlchemy Core statements on it."""
    table: Table = model.__table__  # type: ignore[attr-defined]  # SQLModel sets it, undeclared, on table models
    return table


def from_row(model: type[TableModel], values: Mapping[str, Any]) -> TableModel:
    """An instance of the table ``model`` holding one of its rows, built the way SQLAlchemy's ORM loads rows:
    without ``__init__`` and without validation, since the values come from the database (the source of truth, with
    typed columns). Attributes set on it afterwards behave as on any other instance.

    ``values`` must hold every column, else :class:`ValueError` (a partial select would otherwise give an instance
    that fails only when the missing attribute is read). Profile: ``Job.model_validate`` of a claimed row was 76 µs,
    ~3-4 % of the backlog drain's CPU; this is ~5 µs.
    """
    table = table_of(model)
    columns = table.columns.keys()
    if values.keys() ^ columns:
        raise ValueError(
            f"a {model.__name__} row needs every column of {table.name} and no other: missing "
            f"{sorted(set(columns) - values.keys())}, unknown {sorted(values.keys() - set(columns))}"
        )
    manager = manager_of_class(model)
    if not manager.mapper.configured:
        configure_mappers()  # SQLAlchemy's set-up on first use: an unconfigured class's attributes cannot be set
    instance = manager.new_instance()
    instance.__dict__.update(values)
    object.__setattr__(instance, "__pydantic_fields_set__", set(values))
    return instance
