"""The SQL of the missed-order watchdog (:mod:`delivery_daemon.watchdog`): each store's cursor, which listed orders
have no job, and the missed orders the seller must act on.

Everything runs on the queue's database thread (:meth:`~delivery_daemon.storage.queue.JobQueue.run`). Uniqueness is
the database's, as for jobs: a missed order is one row per (store, order id) (``INSERT … ON CONFLICT DO NOTHING``),
and a cursor one row per store that only moves forward. A missed order is *open* while no job exists for it: a late
webhook (or an operator) that creates the job closes it without touching this table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, Table, and_, exists, func, select, update

from delivery_daemon.order import IncomingOrder
from delivery_daemon.storage import dialect
from delivery_daemon.storage.jobs import JOBS
from delivery_daemon.storage.models import MISSED_ORDERS as MISSED
from delivery_daemon.storage.models import WATCHDOG_CURSORS as CURSORS
from delivery_daemon.storage.queue import JobQueue

_NO_JOB = ~exists().where(and_(JOBS.c.store == MISSED.c.store, JOBS.c.order_id == MISSED.c.order_id))
"""A missed order is open while no job holds the same (store, order id)."""


@dataclass(frozen=True)
class OpenMissed:
    """An open missed order, as ``delivery-daemon missed`` and the status page show it."""

    store: str
    order_id: str
    marketplace: str
    product_id: str
    placed_at: float
    found_at: float
    reason: str


class WatchdogLedger:
    """The watchdog's tables, in the queue's database."""

    def __init__(self, queue: JobQueue) -> None:
        self.queue = queue

    # -- the cursor --------------------------------------------------------------------------------------------

    def _cursor(self, store: str) -> float | None:
        with self.queue.engine.connect() as conn:
            value = conn.execute(select(CURSORS.c.since).where(CURSORS.c.store == store)).scalar_one_or_none()
        return None if value is None else float(value)

    async def cursor(self, store: str) -> float | None:
        """Where the next run of ``store`` starts listing (unix seconds), or None before its first full run."""
        return await self.queue.run(self._cursor, store)

    def _advance(self, store: str, since: float) -> float:
        now = self.queue.clock.now()
        name = self.queue.engine.dialect.name
        with self.queue.engine.begin() as conn:
            conn.execute(
                dialect.insert(name, CURSORS)
                .values(store=store, since=since, updated_at=now)
                .on_conflict_do_nothing(index_elements=["store"])
            )
            # Forward only, in the UPDATE itself: two runs (the scheduler's and `reconcile`) never move it back.
            conn.execute(
                update(CURSORS)
                .where(and_(CURSORS.c.store == store, CURSORS.c.since < since))
                .values(since=since, updated_at=now)
            )
            return float(conn.execute(select(CURSORS.c.since).where(CURSORS.c.store == store)).scalar_one())

    async def advance(self, store: str, since: float) -> float:
        """Move ``store``'s cursor to ``since`` unless it is already further; the cursor now."""
        return await self.queue.run(self._advance, store, since)

    # -- listed orders -----------------------------------------------------------------------------------------

    def _listed(self, table: Table, store: str, order_ids: Sequence[str]) -> set[str]:
        if not order_ids:
            return set()
        with self.queue.engine.connect() as conn:
            found = select(table.c.order_id).where(and_(table.c.store == store, table.c.order_id.in_(list(order_ids))))
            return set(conn.execute(found).scalars())

    async def with_job(self, store: str, order_ids: Sequence[str]) -> set[str]:
        """Which of ``order_ids`` (one page of a listing) already have a job for ``store``: one indexed query."""
        return await self.queue.run(self._listed, JOBS, store, order_ids)

    async def missed(self, store: str, order_ids: Sequence[str]) -> set[str]:
        """Which of ``order_ids`` were raised as missed before (open or not)."""
        return await self.queue.run(self._listed, MISSED, store, order_ids)

    def _raise(self, order: IncomingOrder, placed_at: float, reason: str) -> bool:
        name = self.queue.engine.dialect.name
        with self.queue.engine.begin() as conn:
            inserted = conn.execute(
                dialect.insert(name, MISSED)
                .values(
                    store=order.store,
                    order_id=order.order_id,
                    marketplace=order.marketplace,
                    product_id=order.product_id,
                    placed_at=placed_at,
                    found_at=self.queue.clock.now(),
                    reason=reason,
                )
                .on_conflict_do_nothing(index_elements=["store", "order_id"])
                .returning(MISSED.c.id)
            ).scalar_one_or_none()
        return inserted is not None

    async def raise_missed(self, order: IncomingOrder, placed_at: float, reason: str) -> bool:
        """Record ``order`` as missed; True the first time, False when it was raised before (by any run)."""
        return await self.queue.run(self._raise, order, placed_at, reason)

    async def open_missed(self, store: str | None = None, limit: int = 500) -> list[OpenMissed]:
        """The open missed orders (no job yet), oldest found first."""
        return await self.queue.run(open_missed, self.queue.engine, store, limit)


def open_missed(engine: Engine, store: str | None = None, limit: int = 500) -> list[OpenMissed]:
    """The open missed orders of ``store`` (every store when None), oldest found first, at most ``limit``."""
    with engine.connect() as conn:
        return missed_rows(conn, store, limit)


def missed_rows(conn: Connection, store: str | None = None, limit: int = 500) -> list[OpenMissed]:
    """:func:`open_missed` on an open connection (the status page reads it with the rest of its overview)."""
    query = select(MISSED).where(_NO_JOB)
    if store is not None:
        query = query.where(MISSED.c.store == store)
    rows = conn.execute(query.order_by(MISSED.c.found_at, MISSED.c.id).limit(limit)).all()
    return [
        OpenMissed(r.store, r.order_id, r.marketplace, r.product_id, r.placed_at, r.found_at, r.reason) for r in rows
    ]


def count_open(engine: Engine) -> dict[str, int]:
    """Open missed orders per store (for the status page and the metrics gauge)."""
    with engine.connect() as conn:
        rows = conn.execute(select(MISSED.c.store, func.count()).where(_NO_JOB).group_by(MISSED.c.store)).all()
    return {str(store): int(count) for store, count in rows}
