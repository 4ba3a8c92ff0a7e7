"""The tables. The database is the source of truth for every order the daemon has accepted.

``jobs`` holds one row per (store, order_id) — the unique constraint, not application code, makes a resent webhook
a no-op. ``attempts`` is the order's history: every step outcome and state change, with time, HTTP status and error.
Times are epoch seconds (floats) so the schema stays portable between SQLite and PostgreSQL.

The tables are SQLAlchemy Core :class:`~sqlalchemy.Table` objects on :data:`METADATA`; every statement on them is a
Core statement. The rows the queue hands out (:class:`Job`, :class:`Attempt`, :class:`Revocation`) are plain
dataclasses whose fields are their table's columns, in order (tests/storage/test_models.py pins it): no ORM, no
validation, since the values come from the database (the source of truth, with typed columns). Issue #26, item 5:
SQLModel's class machinery, a pydantic model per table and the ORM's mappers cost a seller's idle daemon ~7 MB
(docs/performance.md, item 30).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar, cast

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from delivery_daemon.order import LIMITS

RowT = TypeVar("RowT")

METADATA = MetaData()
"""Every table the daemon declares, all in this module: what a new database is created from, what the migrations
are compared with, what ``db migrate`` copies."""


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


class RevocationState(StrEnum):
    """Where a revocation stands: ``pending`` (due at ``due_at``), ``running`` (leased), ``done`` or ``dead``."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    DEAD = "dead"


def _limited(name: str, length: int, *, nullable: bool = False, **options: Any) -> Column[str]:
    return Column(name, String(length), nullable=nullable, **options)


JOBS = Table(
    "jobs",
    METADATA,
    Column("id", Integer, primary_key=True),
    _limited("store", LIMITS["store"]),
    _limited("order_id", LIMITS["order_id"]),
    _limited("marketplace", LIMITS["marketplace"]),
    _limited("product_id", LIMITS["product_id"]),
    _limited("state", 16, default=JobState.QUEUED.value),
    # The marketplace-specific data the adapter needs later (e.g. SoftStore's delivery_url and token), as JSON.
    Column("payload", Text, nullable=False),
    Column("quantity", Integer),
    _limited("buyer_email", LIMITS["buyer_email"], nullable=True),
    # Stored once, before the first delivery attempt; every retry sends exactly these bytes.
    Column("content", Text),
    Column("attempts", Integer, nullable=False, default=0),
    Column("received", Integer, nullable=False, default=1),
    Column("due_at", Float, nullable=False),
    _limited("lease_owner", 64, nullable=True),
    Column("lease_until", Float),
    Column("last_error", Text),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("delivered_at", Float),
    # "refunded" | "disputed": the marketplace reported it while the job was leased (pending: the worker settles it,
    # see JobQueue.transition) or after delivery (delivered and flagged: a refunded buyer holds the keys). NULL on
    # every other job (a cancelled one says why in last_error).
    _limited("flag", 16, nullable=True),
    # How many contents the order has had before this one (0: the first). An operator's re-issue, or a cancellation
    # that gave back a content never sent, clears ``content`` and adds one, so the next one is a new issue.
    # The database's default, not the statement's: rows written without it (an older schema's INSERTs) still work.
    Column("issue", Integer, nullable=False, server_default="0"),
    UniqueConstraint("store", "order_id", name="uq_jobs_store_order"),
    Index("ix_jobs_state_due", "state", "due_at"),
    Index("ix_jobs_state_lease", "state", "lease_until"),
)

ATTEMPTS = Table(
    "attempts",
    METADATA,
    Column("id", Integer, primary_key=True),
    Column("job_id", Integer, ForeignKey("jobs.id"), nullable=False, index=True),
    Column("at", Float, nullable=False),
    _limited("step", 16),  # receive | verify | generate | deliver | lease | admin | event
    _limited("outcome", 32),  # e.g. accepted, ok, retry, dead, delivered, waiting, released
    _limited("state", 16),  # the job's state after this attempt
    Column("http_status", Integer),
    Column("error", Text),
    Column("duration_ms", Float),
    # The after-delivery sweep's "which jobs finished this step" (storage.followups), without scanning the history.
    Index("ix_attempts_step_outcome", "step", "outcome", "job_id"),
)

REVOCATIONS = Table(
    "revocations",
    METADATA,
    Column("id", Integer, primary_key=True),
    Column("job_id", Integer, ForeignKey("jobs.id"), nullable=False),
    Column("issue", Integer, nullable=False),  # the job's ``issue`` whose content this revokes
    _limited("reason", 16),  # refunded | disputed | cancelled | revoked | reissued
    # False only when no delivery attempt was ever made with this content: a stock key goes back to the pool, and
    # no ``order.revoked`` event is sent (nobody was told about the order).
    Column("sent", Boolean, nullable=False),
    Column("content", Text),  # sealed like jobs.content, with the job's context
    Column("key_hashes", Text),  # JSON list of SHA-256 hex of the revoked keys
    _limited("state", 16, default=RevocationState.PENDING.value),
    Column("attempts", Integer, nullable=False, default=0),
    Column("due_at", Float, nullable=False),
    _limited("lease_owner", 64, nullable=True),
    Column("lease_until", Float),
    Column("hook_done_at", Float),  # the generator's hook succeeded (or the generator has none): never again
    Column("notified_at", Float),  # the channel's order.revoked event was accepted (or there is none to send)
    Column("last_error", Text),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("job_id", "issue", name="uq_revocations_job_issue"),
    Index("ix_revocations_state_due", "state", "due_at"),
)

WEBHOOK_EVENTS = Table(
    "webhook_events",
    METADATA,
    Column("id", Integer, primary_key=True),
    _limited("store", LIMITS["store"]),
    _limited("event_id", LIMITS["event_id"]),
    Column("received_at", Float, nullable=False, index=True),
    UniqueConstraint("store", "event_id", name="uq_webhook_events_store_event"),
)
"""A marketplace event id already handled for a store (Stripe ``evt_…``, Standard Webhooks ``webhook-id``).

The unique constraint makes a resent event a duplicate; rows older than the retention are pruned."""

WATCHDOG_CURSORS = Table(
    "watchdog_cursors",
    METADATA,
    _limited("store", LIMITS["store"], primary_key=True),
    Column("since", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)
"""How far the missed-order watchdog has looked at a store's order list (one row per store).

``since`` is the creation time (unix seconds) from which the next run lists paid orders: a run that listed every
page moves it forward, so a run costs the orders placed since the last one, not the store's whole history."""

MISSED_ORDERS = Table(
    "missed_orders",
    METADATA,
    Column("id", Integer, primary_key=True),
    _limited("store", LIMITS["store"]),
    _limited("order_id", LIMITS["order_id"]),
    _limited("marketplace", LIMITS["marketplace"]),
    _limited("product_id", LIMITS["product_id"]),
    Column("placed_at", Float, nullable=False),  # when the marketplace says the order was placed
    Column("found_at", Float, nullable=False, index=True),  # when the watchdog first found it
    Column("reason", Text, nullable=False),  # why the daemon could not queue it, for the seller
    UniqueConstraint("store", "order_id", name="uq_missed_orders_store_order"),
)
"""A paid order the marketplace lists that has no job and that the daemon cannot deliver without its webhook
(SoftStore: the delivery token is only in the webhook): the seller must act. One row per (store, order_id), so
a later run raises it once; it stops being open as soon as a job for the order exists (a late webhook)."""


STOCK_KEYS = Table(
    "stock_keys",
    METADATA,
    Column("id", Integer, primary_key=True),
    Column("store", String(64), nullable=False),
    Column("product_id", String(128), nullable=False),
    Column("key", Text, nullable=False),
    Column("key_hash", String(64)),
    Column("imported_at", Float, nullable=False),
    Column("claimed_by", String(256)),
    Column("claimed_at", Float),
    Column("revoked_at", Float),  # its order was refunded, disputed or revoked after it went out: never freed
    UniqueConstraint("store", "product_id", "key_hash", name="uq_stock_keys_key_hash"),
    Index("ix_stock_keys_free", "store", "product_id", "claimed_by"),
)
"""The stock pool's keys (:mod:`~delivery_daemon.storage.stock_pool`), one pre-made key per row; ``claimed_by`` is the
idempotency key of the order it was issued to. ``key`` is sealed and ``key_hash`` its HMAC; a NULL ``key_hash``
marks a plaintext row not sealed yet."""

DAEMON_SECRETS = Table(
    "daemon_secrets",
    METADATA,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)
"""The daemon's own named secrets (:mod:`~delivery_daemon.storage.vault`), one per row; ``value`` is sealed
(``enc1:…``) whenever the daemon has an encryption key."""


_ROWS: dict[type[Any], tuple[Table, frozenset[str]]] = {}
"""Each row class → its table and the set of its column names (what :func:`from_row` checks a row against)."""


def _holds(table: Table) -> Callable[[type[RowT]], type[RowT]]:
    """Register the decorated dataclass as the row class of ``table`` (for :func:`table_of` and :func:`from_row`)."""

    def register(row_class: type[RowT]) -> type[RowT]:
        _ROWS[row_class] = (table, frozenset(table.columns.keys()))
        return row_class

    return register


@_holds(JOBS)
@dataclass(slots=True, kw_only=True)
class Job:
    """One accepted order and everything needed to finish it (a row of ``jobs``; the columns say what each holds)."""

    id: int | None = None
    store: str
    order_id: str
    marketplace: str
    product_id: str
    state: str = JobState.QUEUED.value
    payload: str
    quantity: int | None = None
    buyer_email: str | None = None
    content: str | None = None
    attempts: int = 0
    received: int = 1
    due_at: float
    lease_owner: str | None = None
    lease_until: float | None = None
    last_error: str | None = None
    created_at: float
    updated_at: float
    delivered_at: float | None = None
    flag: str | None = None
    issue: int = 0


@_holds(ATTEMPTS)
@dataclass(slots=True, kw_only=True)
class Attempt:
    """One recorded step outcome or state change of a job (a row of ``attempts``)."""

    id: int | None = None
    job_id: int
    at: float
    step: str
    outcome: str
    state: str
    http_status: int | None = None
    error: str | None = None
    duration_ms: float | None = None


@_holds(REVOCATIONS)
@dataclass(slots=True, kw_only=True)
class Revocation:
    """One content of an order to take back (see :mod:`delivery_daemon.storage.revocations`): written in the
    transaction that refunded, disputed, cancelled or revoked the order, run by the worker until done or dead."""

    id: int | None = None
    job_id: int
    issue: int
    reason: str
    sent: bool
    content: str | None = None
    key_hashes: str | None = None
    state: str = RevocationState.PENDING.value
    attempts: int = 0
    due_at: float
    lease_owner: str | None = None
    lease_until: float | None = None
    hook_done_at: float | None = None
    notified_at: float | None = None
    last_error: str | None = None
    created_at: float
    updated_at: float


def table_of(model: type[Any]) -> Table:
    """The table whose rows ``model`` (:class:`Job`, :class:`Attempt`, :class:`Revocation`) holds; KeyError for
    any other class."""
    return _ROWS[model][0]


def from_row(model: type[RowT], values: Mapping[str, Any]) -> RowT:
    """An instance of the row class ``model`` holding one row of its table, ``values`` as they are (no conversion:
    the database's typed columns are the source of truth).

    ``values`` must hold every column, else :class:`ValueError` (a partial select would otherwise give an instance
    whose missing fields silently hold their defaults). Profile: ``Job.model_validate`` of a claimed row was 76 µs,
    SQLModel's ORM-style load ~5 µs; this is the dataclass's own constructor.
    """
    table, columns = _ROWS[model]
    if values.keys() != columns:  # compared as sets, without building one
        raise ValueError(
            f"a {model.__name__} row needs every column of {table.name} and no other: missing "
            f"{sorted(columns - values.keys())}, unknown {sorted(values.keys() - columns)}"
        )
    return cast("Callable[..., RowT]", model)(**values)  # quoted: a subscript per call would cost ~3 µs
