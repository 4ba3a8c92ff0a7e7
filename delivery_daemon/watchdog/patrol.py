"""The watchdog's run: list a store's paid orders since its cursor, and queue or raise each one without a job.

For every store whose adapter is an :class:`~delivery_daemon.marketplaces.listing.OrderListing`, a run (on the
daemon's one scheduler every ``watchdog.interval`` seconds, or by hand with ``delivery-daemon reconcile``):

1. starts at the store's cursor (``watchdog_cursors``), never further back than ``watchdog.lookback`` (a store's first
   run starts there too), or at the ``since`` it is given;
2. asks the adapter for the paid orders placed since then, page by page, and looks each page's order ids up in
   ``jobs`` in one query;
3. for an order with no job: if the listing says it is ``deliverable``, queues it through the receiver's path (the
   same shared normalisation, the same one-mailbox rule for the buyer's email, the same
   :meth:`~delivery_daemon.storage.queue.JobQueue.enqueue`): the unique (store, order id) of ``jobs`` keeps it one job
   when the webhook arrives at the same moment. Otherwise it is recorded in ``missed_orders`` (once) and logged
   ``order.missed`` as a warning: the seller must act. An order younger than ``watchdog.grace`` is left for the next
   run (its webhook may be on its way) on scheduled runs;
4. once every page was read, moves the cursor to the run's start minus ``watchdog.settle``: each run costs the orders
   of its window, not the store's history. A run that failed part way leaves the cursor where it was, and so does a
   run by hand that started later than the cursor (it did not look at the orders in between).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterable, Sequence

import structlog
from apscheduler.schedulers.base import BaseScheduler

from delivery_daemon.clock import Clock
from delivery_daemon.config import WatchdogSettings
from delivery_daemon.errors import DeliveryDaemonError, Held, WebhookRejected
from delivery_daemon.marketplaces.base import normalise
from delivery_daemon.marketplaces.listing import ListedOrder, OrderListing
from delivery_daemon.order import IncomingOrder
from delivery_daemon.pipeline.stores import Store
from delivery_daemon.recipient import recipient
from delivery_daemon.storage.missed import WatchdogLedger
from delivery_daemon.storage.queue import JobQueue
from delivery_daemon.watchdog.findings import Finding, Outcome, StoreReport, WatchdogObserver

log = structlog.get_logger("delivery_daemon.watchdog")

JOB_ID = "watchdog"
"""The scheduler job's id: fixed, so a watchdog rebuilt on a reload replaces the old one's job."""


def listing_of(store: Store) -> OrderListing | None:
    """The store's adapter as an order listing, or None when its marketplace cannot list orders."""
    adapter = store.marketplace
    return adapter if isinstance(adapter, OrderListing) else None


class Watchdog:
    """The missed-order watchdog over the daemon's stores (``stores`` is read at each run: reloads apply)."""

    def __init__(
        self,
        stores: Callable[[], dict[str, Store]],
        queue: JobQueue,
        settings: WatchdogSettings,
        clock: Clock,
        *,
        wake: Callable[[], None] = lambda: None,
        observers: Sequence[WatchdogObserver] = (),
    ) -> None:
        self.stores = stores
        self.queue = queue
        self.ledger = WatchdogLedger(queue)
        self.settings = settings
        self.clock = clock
        self.wake = wake
        self.observers = list(observers)
        self._locks: dict[str, asyncio.Lock] = {}

    def listed_stores(self) -> list[str]:
        """The names of the stores whose marketplace can list orders."""
        return [name for name, store in self.stores().items() if listing_of(store) is not None]

    def schedule(self, scheduler: BaseScheduler) -> None:
        """Add the periodic run of every listing store to ``scheduler`` (when enabled): first one ``interval`` after
        the start, then every ``interval`` seconds, never two at once."""
        if not self.settings.enabled:
            return
        scheduler.add_job(
            self.run_all,
            "interval",
            seconds=self.settings.interval,
            id=JOB_ID,
            max_instances=1,
            coalesce=True,
            replace_existing=True,
        )

    async def run_all(self) -> list[StoreReport]:
        """One scheduled run over every listing store; a store that fails is logged and does not stop the others."""
        reports: list[StoreReport] = []
        for name in self.listed_stores():
            try:
                reports.append(await self.run_store(name))
            except Exception as exc:  # an adapter's bug must not stop the other stores' runs, nor the scheduler's
                log.error("watchdog.failed", store=name, error=f"{type(exc).__name__}: {exc}"[:300])
                for observer in self.observers:
                    observer.watchdog_run(name, "failed")
        return reports

    async def run_store(self, name: str, since: float | None = None, *, grace: float | None = None) -> StoreReport:
        """One run over store ``name``: from ``since`` when given (``reconcile``), else from its cursor. ``grace``
        defaults to ``watchdog.grace``; 0 handles every listed order, even one dated ahead of our clock. Never raises
        for the marketplace's or the database's failures: they are in the report's ``error`` (and logged
        ``watchdog.failed``)."""
        store = self.stores().get(name)
        listing = listing_of(store) if store is not None else None
        if store is None or listing is None:
            raise ValueError(f"store {name!r} is not configured or its marketplace cannot list orders")
        async with self._locks.setdefault(name, asyncio.Lock()):
            return await self._run(store, listing, since, self.settings.grace if grace is None else grace)

    async def _run(self, store: Store, listing: OrderListing, since: float | None, grace: float) -> StoreReport:
        started = self.clock.now()
        floor = started - self.settings.lookback
        due = max(floor, await self.ledger.cursor(store.name) or floor)
        start = since if since is not None else due
        report = StoreReport(store.name, start)
        cursor: str | None = None
        try:
            while True:
                page = await listing.list_paid_orders(start, cursor)
                report.pages += 1
                report.findings.extend(await self._handle(store, page.orders, started - grace if grace > 0 else None))
                cursor = page.cursor
                if cursor is None:
                    break
            if start <= due:  # a run by hand from a later time did not look at everything since the cursor
                report.cursor = await self.ledger.advance(store.name, started - self.settings.settle)
        except DeliveryDaemonError as exc:
            report.error = f"{type(exc).__name__}: {exc}"[:300]
            log.warning("watchdog.failed", store=store.name, pages=report.pages, error=report.error)
        for finding in report.findings:
            for observer in self.observers:
                observer.watchdog_order(store.name, finding.outcome.value)
        for observer in self.observers:
            observer.watchdog_run(store.name, "failed" if report.error else "ok")
        log.info(
            "watchdog.run",
            store=store.name,
            since=round(start, 3),
            pages=report.pages,
            listed=len(report.findings),
            queued=report.count(Outcome.QUEUED),
            missed=report.count(Outcome.MISSED),
            failed=report.error is not None,
        )
        return report

    async def _handle(self, store: Store, orders: Iterable[ListedOrder], newest: float | None) -> list[Finding]:
        """Handle one page; an order placed after ``newest`` is left for later (None: none is, whatever its date)."""
        listed = list(orders)
        ids = [item.order.order_id for item in listed]
        have = await self.ledger.with_job(store.name, ids)
        raised = await self.ledger.missed(store.name, ids)
        findings: list[Finding] = []
        for item in listed:
            order = item.order
            if order.order_id in have:
                findings.append(self._finding(item, Outcome.HAD_JOB))
            elif newest is not None and item.created_at > newest:
                findings.append(self._finding(item, Outcome.TOO_RECENT))
            elif order.order_id in raised:
                findings.append(self._finding(item, Outcome.STILL_MISSED))
            else:
                findings.append(await self._recover(store, item))
        return findings

    async def _recover(self, store: Store, item: ListedOrder) -> Finding:
        """Queue a deliverable order as the receiver would; raise any other as missed."""
        why_not = item.why_not or "the marketplace's list does not give what delivery needs"
        if item.deliverable:
            try:
                checked = normalise(item.order)
                assert isinstance(checked, IncomingOrder)
                order = self._held_if_not_one_mailbox(store, checked)
            except WebhookRejected as exc:
                why_not = f"the listed order cannot be queued: {exc.reason}"
            else:
                enqueued = await self.queue.enqueue(order)
                if not enqueued.created:
                    return self._finding(item, Outcome.RACED, job_id=enqueued.job_id)
                self.wake()
                log.warning(
                    "order.recovered",
                    store=store.name,
                    order_id=order.order_id,
                    job_id=enqueued.job_id,
                    product_id=order.product_id,
                    held=order.held is not None,
                )
                return self._finding(item, Outcome.QUEUED, detail=order.held, job_id=enqueued.job_id)
        if not await self.ledger.raise_missed(item.order, item.created_at, why_not):
            return self._finding(item, Outcome.STILL_MISSED, detail=why_not)
        log.warning(
            "order.missed",
            store=store.name,
            order_id=item.order.order_id,
            product_id=item.order.product_id,
            placed_at=round(item.created_at, 3),
            reason=why_not,
        )
        return self._finding(item, Outcome.MISSED, detail=why_not)

    @staticmethod
    def _held_if_not_one_mailbox(store: Store, order: IncomingOrder) -> IncomingOrder:
        """The receiver's rule: a store that mails the buyer keeps the order ``held`` when its email is not exactly
        one mailbox."""
        try:
            recipient(store.settings, order.buyer_email)
        except Held as exc:
            return dataclasses.replace(order, held=exc.reason)
        return order

    @staticmethod
    def _finding(
        item: ListedOrder, outcome: Outcome, *, detail: str | None = None, job_id: int | None = None
    ) -> Finding:
        order = item.order
        return Finding(order.order_id, order.product_id, item.created_at, outcome, detail, job_id)
