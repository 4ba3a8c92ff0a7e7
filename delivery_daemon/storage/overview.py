"""Read-only SQL behind the status page: overview numbers, the filtered orders list, one order, stock levels.

Every query is SQLAlchemy Core on the ``jobs``/``attempts`` tables (plus ``stock_keys`` when it exists) and stays
portable between SQLite and PostgreSQL: no date functions, times are epoch seconds compared with bound values.
:class:`StatusQueries` runs them off the event loop and translates SQLAlchemy errors into
:class:`~delivery_daemon.storage.jobs.QueueError`. Nothing here reads ``jobs.content`` or ``jobs.payload``: they
hold the generated keys and the marketplace's delivery token, which the page never shows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio.to_thread
from sqlalchemy import Column, Engine, MetaData, String, Table, and_, case, false, func, inspect, or_, select, true
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from delivery_daemon.clock import Clock
from delivery_daemon.storage.jobs import ATTEMPTS, JOBS, QueueError
from delivery_daemon.storage.missed import OpenMissed, missed_rows
from delivery_daemon.storage.models import FINAL, JobState
from delivery_daemon.storage.revocations import count_revocations, read_revocations, redeliverable

T = TypeVar("T")

PAGE_SIZE = 50
"""Orders per page of the orders table."""

LATENCY_BUCKETS: tuple[tuple[str, float], ...] = (
    ("< 1 s", 1.0),
    ("1-5 s", 5.0),
    ("5-30 s", 30.0),
    ("30 s-1 min", 60.0),
    ("1-5 min", 300.0),
    ("5-30 min", 1800.0),
    ("30 min-2 h", 7200.0),
)
"""Upper bounds (seconds, exclusive) of the latency chart's bars; a last bar takes everything slower."""
SLOWEST_BUCKET = "≥ 2 h"

# The plugins branch owns this table; only the columns read here are declared, on a MetaData of our own so that
# create_schema never creates it.
_STOCK_METADATA = MetaData()
STOCK_KEYS = Table(
    "stock_keys",
    _STOCK_METADATA,
    Column("store", String(64)),
    Column("product_id", String(128)),
    Column("claimed_by", String(256)),
)

# Only these columns of a job are ever selected (never content or payload).
_JOB_COLUMNS = (
    JOBS.c.id,
    JOBS.c.store,
    JOBS.c.order_id,
    JOBS.c.marketplace,
    JOBS.c.product_id,
    JOBS.c.state,
    JOBS.c.quantity,
    JOBS.c.buyer_email,
    JOBS.c.attempts,
    JOBS.c.received,
    JOBS.c.due_at,
    JOBS.c.last_error,
    JOBS.c.created_at,
    JOBS.c.updated_at,
    JOBS.c.delivered_at,
    JOBS.c.flag,
)


@dataclass(frozen=True)
class OrderFilter:
    """What the orders table shows: exact state/store/product, and ``search`` within order id or buyer e-mail."""

    state: str = ""
    store: str = ""
    product: str = ""
    search: str = ""
    page: int = 1


@dataclass(frozen=True)
class LatencyBar:
    label: str
    count: int


REVOCATION_FIELDS = ("issue", "reason", "sent", "state", "attempts", "created_at", "last_error")
"""What the order page shows of each revocation."""


@dataclass(frozen=True)
class Overview:
    counts: dict[str, int]
    oldest_open: dict[str, Any] | None
    delivered_last_hour: int
    delivered_last_day: int
    latency: list[LatencyBar]
    now: float
    missed: list[OpenMissed] = field(default_factory=list)
    """Open missed orders (the watchdog's: paid, no job, the seller must act), oldest found first, at most 50."""
    revocations: dict[str, int] = field(default_factory=dict)
    """Revocations per state (pending, running, done, dead)."""


@dataclass(frozen=True)
class OrdersPage:
    rows: list[dict[str, Any]]
    total: int
    page: int
    pages: int
    stores: list[str] = field(default_factory=list)
    products: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class OrderDetail:
    job: dict[str, Any]
    attempts: list[dict[str, Any]]
    has_content: bool
    revocations: list[dict[str, Any]] = field(default_factory=list)
    """The order's revocations, oldest first (never their content)."""
    redeliverable: bool = False
    """Whether ``orders redeliver`` (the page's button) would take it (:func:`~delivery_daemon.storage.revocations.
    redeliverable`)."""


@dataclass(frozen=True)
class StockRow:
    store: str
    product_id: str
    available: int
    issued: int
    low: bool


def _overview(conn: Connection, now: float) -> Overview:
    counts = {state.value: 0 for state in JobState}
    for state, count in conn.execute(select(JOBS.c.state, func.count()).group_by(JOBS.c.state)):
        counts[state] = int(count)
    oldest = conn.execute(
        select(JOBS.c.id, JOBS.c.store, JOBS.c.order_id, JOBS.c.state, JOBS.c.created_at)
        .where(JOBS.c.state.not_in(FINAL))
        .order_by(JOBS.c.created_at, JOBS.c.id)
        .limit(1)
    ).first()
    delivered = conn.execute(
        select(
            func.count(case((JOBS.c.delivered_at >= now - 3600, 1))),
            func.count(case((JOBS.c.delivered_at >= now - 86400, 1))),
        ).where(JOBS.c.state == JobState.DELIVERED.value)
    ).one()
    latency_s = JOBS.c.delivered_at - JOBS.c.created_at
    bucket = case(*((latency_s < bound, label) for label, bound in LATENCY_BUCKETS), else_=SLOWEST_BUCKET)
    found: dict[str, int] = {
        str(label): int(count)
        for label, count in conn.execute(
            select(bucket.label("bucket"), func.count())
            .where(and_(JOBS.c.state == JobState.DELIVERED.value, JOBS.c.delivered_at >= now - 86400))
            .group_by(bucket)
        )
    }
    labels = [label for label, _ in LATENCY_BUCKETS] + [SLOWEST_BUCKET]
    return Overview(
        revocations=count_revocations(conn),
        counts=counts,
        oldest_open=dict(oldest._mapping) if oldest is not None else None,
        delivered_last_hour=int(delivered[0]),
        delivered_last_day=int(delivered[1]),
        latency=[LatencyBar(label, found.get(label, 0)) for label in labels],
        now=now,
        missed=missed_rows(conn, limit=50),
    )


def _conditions(wanted: OrderFilter) -> list[Any]:
    """The filter as SQL conditions. Text holding NUL matches nothing: no stored text holds it (the receiver refuses
    it before the commit), and PostgreSQL refuses it even as a parameter."""
    if any("\x00" in text for text in (wanted.store, wanted.product, wanted.search)):
        return [false()]
    conditions: list[Any] = []
    if wanted.state:
        conditions.append(JOBS.c.state == wanted.state)
    if wanted.store:
        conditions.append(JOBS.c.store == wanted.store)
    if wanted.product:
        conditions.append(JOBS.c.product_id == wanted.product)
    if wanted.search:
        conditions.append(
            or_(
                JOBS.c.order_id.contains(wanted.search, autoescape=True),
                JOBS.c.buyer_email.contains(wanted.search, autoescape=True),
            )
        )
    return conditions


def _orders(conn: Connection, wanted: OrderFilter) -> OrdersPage:
    conditions = _conditions(wanted)
    where = and_(true(), *conditions)
    total = int(conn.execute(select(func.count()).select_from(JOBS).where(where)).scalar_one())
    pages = max(1, -(-total // PAGE_SIZE))
    page = min(max(1, wanted.page), pages)
    rows = conn.execute(
        select(*_JOB_COLUMNS)
        .where(where)
        .order_by(JOBS.c.created_at.desc(), JOBS.c.id.desc())
        .limit(PAGE_SIZE)
        .offset((page - 1) * PAGE_SIZE)
    ).fetchall()
    stores = list(conn.execute(select(JOBS.c.store).distinct().order_by(JOBS.c.store)).scalars())
    products = list(conn.execute(select(JOBS.c.product_id).distinct().order_by(JOBS.c.product_id)).scalars())
    return OrdersPage(
        rows=[dict(row._mapping) for row in rows], total=total, page=page, pages=pages, stores=stores, products=products
    )


def _order(conn: Connection, job_id: int) -> OrderDetail | None:
    row = conn.execute(
        select(
            *_JOB_COLUMNS, JOBS.c.content.is_not(None).label("has_content"), redeliverable().label("redeliverable")
        ).where(JOBS.c.id == job_id)
    ).first()
    if row is None:
        return None
    job = dict(row._mapping)
    has_content = bool(job.pop("has_content"))
    can_redeliver = bool(job.pop("redeliverable"))
    attempts = conn.execute(select(ATTEMPTS).where(ATTEMPTS.c.job_id == job_id).order_by(ATTEMPTS.c.id)).fetchall()
    revocations = [{name: getattr(r, name) for name in REVOCATION_FIELDS} for r in read_revocations(conn, job_id)]
    return OrderDetail(
        job=job,
        attempts=[dict(a._mapping) for a in attempts],
        has_content=has_content,
        revocations=revocations,
        redeliverable=can_redeliver,
    )


def _stock(conn: Connection, low_stock: int) -> list[StockRow]:
    if not inspect(conn).has_table(STOCK_KEYS.name):
        return []  # no stock generator installed: nothing to show
    free = func.count(case((STOCK_KEYS.c.claimed_by.is_(None), 1)))
    issued = func.count(case((STOCK_KEYS.c.claimed_by.is_not(None), 1)))
    rows = conn.execute(
        select(STOCK_KEYS.c.store, STOCK_KEYS.c.product_id, free, issued)
        .group_by(STOCK_KEYS.c.store, STOCK_KEYS.c.product_id)
        .order_by(STOCK_KEYS.c.store, STOCK_KEYS.c.product_id)
    ).all()
    return [
        StockRow(store, product, int(available), int(used), int(available) <= low_stock)
        for store, product, available, used in rows
    ]


class StatusQueries:
    """The status page's reads, as coroutines that run in a worker thread."""

    def __init__(self, engine: Engine, clock: Clock, *, low_stock: int = 10) -> None:
        self.engine = engine
        self.clock = clock
        self.low_stock = low_stock

    async def _read(self, fn: Callable[[Connection], T]) -> T:
        def run() -> T:
            with self.engine.connect() as conn:
                return fn(conn)

        try:
            return await anyio.to_thread.run_sync(run)
        except SQLAlchemyError as exc:
            raise QueueError(f"database error: {type(exc).__name__}") from exc

    async def overview(self) -> Overview:
        """Jobs per state, the oldest unfinished job, deliveries in the last hour/day and the latency histogram."""
        now = self.clock.now()
        return await self._read(lambda conn: _overview(conn, now))

    async def orders(self, wanted: OrderFilter) -> OrdersPage:
        """One page of jobs matching ``wanted``, newest first, with the stores and products to filter by."""
        return await self._read(lambda conn: _orders(conn, wanted))

    async def order(self, job_id: int) -> OrderDetail | None:
        """One job and every recorded attempt, or None when there is no such job."""
        return await self._read(lambda conn: _order(conn, job_id))

    async def stock(self) -> list[StockRow]:
        """Free and issued keys per (store, product); empty when the ``stock_keys`` table does not exist."""
        return await self._read(lambda conn: _stock(conn, self.low_stock))
