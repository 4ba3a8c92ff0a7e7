"""Stock sync: the count a marketplace lists for a product follows the keys left in the daemon's pool.

A product takes part when its store's adapter implements
:class:`~delivery_daemon.marketplaces.optional.StockListing` and either its generator reports stock
(``stock_remaining()``, e.g. the ``stock`` plugin) or it has a fixed ``listed_count``. Products with an unlimited
generator and no ``listed_count`` are never touched.

When it runs:

* after deliveries: the worker tells :class:`StockSync` (one of its observers) about every delivered order;
  :meth:`StockSync.mark` only notes the product, and one sync runs ``stock_sync.debounce`` seconds after the
  first mark — one marketplace call for a burst of orders, never a call on the delivery's path;
* every ``stock_sync.interval`` seconds (and once at start): a full pass over every product it knows, as jobs on
  the daemon's one APScheduler scheduler (:meth:`StockSync.schedule`);
* after ``delivery-daemon stock import`` and on demand (``delivery-daemon softstore sync-stock``), from that
  command's own process, through :func:`sync_once` (:mod:`delivery_daemon.cli.stock`).

A product drawing on a shared pool (``pool:``, see :mod:`delivery_daemon.storage.stock_pool`) shares its count with
every listing that draws on the same pool, in any store: a delivery or an import marks them all (:func:`pool_listings`).

Each sync reads the listed count first and updates it only when it differs. A failure (marketplace down, refused
update, database error) is logged as ``stock_sync.failed`` and retried with a doubling delay (from ``debounce``,
at most ``interval``); the full pass retries it too. Successes are ``stock_sync.updated`` / ``stock_sync.unchanged``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import httpx
import structlog

from delivery_daemon.clock import Clock, SystemClock
from delivery_daemon.config import Settings, StockSyncSettings
from delivery_daemon.errors import ConfigError
from delivery_daemon.generators.resources import ResourceHub
from delivery_daemon.logs import REDACTOR
from delivery_daemon.marketplaces.base import MarketplaceType
from delivery_daemon.marketplaces.optional import StockListing
from delivery_daemon.net.guard import NetPolicy
from delivery_daemon.pipeline.stores import Product, Store, build_stores
from delivery_daemon.storage.engine import create_db_engine, create_schema
from delivery_daemon.storage.jobs import Transition
from delivery_daemon.storage.models import Job, JobState

if TYPE_CHECKING:
    from apscheduler.schedulers.base import BaseScheduler

log = structlog.get_logger("delivery_daemon.stock.sync")

MIN_WAIT = 0.05
"""Seconds the debounce timer waits at least, so that a clock that does not move cannot make it spin."""

Key = tuple[str, str]


@dataclass(frozen=True)
class SyncResult:
    """One product's sync: ``count`` is what it should list, ``before`` what the marketplace showed."""

    store: str
    product_id: str
    outcome: Literal["updated", "unchanged", "failed"]
    count: int | None = None
    before: int | None = None
    error: str | None = None


async def _remaining(product: Product, product_id: str, is_default: bool) -> int | None:
    """The generator's ``stock_remaining()`` (sync ones run in a thread: they query the database); None when the
    generator has no notion of stock. A store's default product is asked with the product id."""
    method = getattr(product.generator, "stock_remaining", None)
    if not callable(method):
        return None
    try:
        takes_id = bool(inspect.signature(method).parameters)
    except (TypeError, ValueError):
        takes_id = False
    if is_default and not takes_id:
        return None  # it cannot say which product it means
    return await stock_remaining(product.generator, *((product_id,) if takes_id else ()))


async def stock_remaining(generator: Any, *args: str) -> int | None:
    """``generator.stock_remaining(*args)`` if the plugin has it (sync ones run in a thread: the stock plugin's
    count is a database query, and neither a sync nor a ``/metrics`` scrape may stall deliveries); None when it has
    no notion of stock or reports no number. What the method raises propagates."""
    method = getattr(generator, "stock_remaining", None)
    if not callable(method):
        return None
    if inspect.iscoroutinefunction(method):
        value: Any = await method(*args)
    else:
        value = await asyncio.to_thread(method, *args)
        if inspect.isawaitable(value):
            value = await value
    return int(value) if isinstance(value, int | float) else None


def pool_listings(stores: Mapping[str, Store], pool: str, known: Collection[Key] = ()) -> list[Key]:
    """Every (store, product id) drawing on the shared ``pool``: the products configured with it, and the ``known``
    ids a store's default product serves when that default draws on it."""
    keys: list[Key] = []
    for name, store in stores.items():
        keys += [(name, product_id) for product_id, product in store.products.items() if product.pool == pool]
        if store.default is not None and store.default.pool == pool:
            keys += sorted(key for key in known if key[0] == name and key[1] not in store.products)
    return keys


class StockSync:
    """Debounced, retried syncs of listed counts; also a worker observer (``job_finished``)."""

    def __init__(self, stores: Callable[[], Mapping[str, Store]], settings: StockSyncSettings, clock: Clock) -> None:
        self._stores = stores  # a callable: a configuration reload swaps the stores
        self.settings = settings
        self.clock = clock
        self._pending: dict[Key, float] = {}  # product -> when to sync it (on the injected clock)
        self._failures: dict[Key, int] = {}
        self._known: set[Key] = set()  # products seen delivered (covers ids served by a store's default product)
        self._lock = asyncio.Lock()
        self._timer: asyncio.Task[None] | None = None
        self._started = False

    # -- worker observer ---------------------------------------------------------------------------------------

    def job_finished(self, job: Job, change: Transition) -> None:
        if change.state is JobState.DELIVERED:
            self.mark(job.store, job.product_id)

    def generated(self, generator: str, seconds: float) -> None:
        pass

    # -- scheduling --------------------------------------------------------------------------------------------

    def mark(self, store: str, product_id: str) -> None:
        """Note that the product's stock may have changed; it is synced ``debounce`` seconds after the first mark.
        Never blocks and never raises."""
        if not self.settings.enabled:
            return
        if self._takes_part(store, product_id):
            self._known.add((store, product_id))
        # A product of a store with no listing may still draw on a pool that listings of other stores show.
        for key in [(store, product_id), *self._sharing(store, product_id)]:
            if self._takes_part(*key):
                self._pending.setdefault(key, self.clock.now() + self.settings.debounce)
        self._arm()

    def _sharing(self, store_name: str, product_id: str) -> list[Key]:
        """The other listings drawing on the product's shared pool (none when it has its own)."""
        stores = self._stores()
        store = stores.get(store_name)
        product = store.product(product_id) if store is not None else None
        if product is None or product.pool is None:
            return []
        return [key for key in pool_listings(stores, product.pool, self._known) if key != (store_name, product_id)]

    def _takes_part(self, store_name: str, product_id: str) -> bool:
        """Whether a sync could do anything for the product (a few lookups; no I/O)."""
        store = self._stores().get(store_name)
        if store is None or not isinstance(store.marketplace, StockListing):
            return False
        product = store.product(product_id)
        return product is not None and (
            product.listed_count is not None or callable(getattr(product.generator, "stock_remaining", None))
        )

    @property
    def pending(self) -> dict[Key, float]:
        """Products waiting for a sync, with the time it is due."""
        return dict(self._pending)

    def _arm(self) -> None:
        if self._started and self._pending and (self._timer is None or self._timer.done()):
            self._timer = asyncio.get_running_loop().create_task(self._run_timer(), name="stock-sync")

    async def _run_timer(self) -> None:
        while self._started and self._pending:
            wait = min(self._pending.values()) - self.clock.now()
            await asyncio.sleep(max(MIN_WAIT, wait))
            await self.flush_due()

    def schedule(self, scheduler: BaseScheduler) -> None:
        """Add the full pass to ``scheduler`` (when enabled): every ``interval`` seconds, plus once as soon as it runs.
        The job ids are fixed, so a StockSync rebuilt on a reload replaces the old one's jobs instead of doubling
        them."""
        if not self.settings.enabled:
            return
        scheduler.add_job(
            self.sync_all,
            "interval",
            seconds=self.settings.interval,
            id="stock-sync",
            max_instances=1,
            coalesce=True,
            replace_existing=True,
        )
        # No misfire limit: added before the scheduler starts, the run must not be dropped as "missed" if the start
        # comes more than APScheduler's default second later.
        scheduler.add_job(self.sync_all, "date", id="stock-sync-first", misfire_grace_time=None, replace_existing=True)

    async def start(self) -> None:
        """Run the debounce timer (the full pass is :meth:`schedule`'s)."""
        if not self.settings.enabled:
            return
        self._started = True
        self._arm()

    async def wait_idle(self) -> None:
        """Return once the debounce timer has nothing left to sync (it keeps going while a sync keeps failing)."""
        while self._timer is not None and not self._timer.done():
            await asyncio.shield(self._timer)

    async def stop(self) -> None:
        self._started = False
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
            self._timer = None

    # -- syncing -----------------------------------------------------------------------------------------------

    async def flush_due(self) -> list[SyncResult]:
        """Sync the marked products whose debounce (or retry delay) is over."""
        now = self.clock.now()
        due = [key for key, at in self._pending.items() if at <= now]
        for key in due:
            del self._pending[key]
        return await self._sync(due)

    async def sync_all(self, stores: Sequence[str] | None = None) -> list[SyncResult]:
        """A full pass: every configured product of the stores (all by default) plus products seen delivered."""
        keys: list[Key] = []
        for name, store in self._stores().items():
            if stores is not None and name not in stores:
                continue
            if not isinstance(store.marketplace, StockListing):
                continue
            keys.extend((name, product_id) for product_id in store.products)
            keys.extend(sorted(key for key in self._known if key[0] == name and key[1] not in store.products))
        for key in keys:
            self._pending.pop(key, None)
        return await self._sync(keys)

    async def sync_product(self, store: str, product_id: str) -> SyncResult | None:
        """Sync one product now; None when it does not take part (see the module docstring)."""
        self._pending.pop((store, product_id), None)
        results = await self._sync([(store, product_id)])
        return results[0] if results else None

    async def sync_pool(self, pool: str) -> list[SyncResult]:
        """Sync every listing drawing on the shared ``pool`` now (see :func:`pool_listings`)."""
        keys = pool_listings(self._stores(), pool, self._known)
        for key in keys:
            self._pending.pop(key, None)
        return await self._sync(keys)

    async def _sync(self, keys: Sequence[Key]) -> list[SyncResult]:
        results: list[SyncResult] = []
        async with self._lock:  # the timer, the full pass and a command never update the same product at once
            for key in keys:
                result = await self._sync_one(*key)
                if result is not None:
                    results.append(result)
        return results

    async def _sync_one(self, store_name: str, product_id: str) -> SyncResult | None:
        store = self._stores().get(store_name)
        listing = store.marketplace if store is not None else None
        if store is None or not isinstance(listing, StockListing):
            return None
        product = store.product(product_id)
        if product is None:
            return None
        key = (store_name, product_id)
        bound = log.bind(store=store_name, product_id=product_id)
        try:
            count = product.listed_count
            if count is None:
                count = await _remaining(product, product_id, is_default=product_id not in store.products)
            if count is None:
                return None  # an unlimited generator and no listed_count: the seller's count stays
            before = await listing.listed_count(product_id)
            if before != count:
                await listing.set_listed_count(product_id, count)
        except Exception as exc:  # a marketplace, database or plugin failure must not stop the other products
            reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
            attempt = self._failures[key] = self._failures.get(key, 0) + 1
            delay = min(self.settings.interval, max(self.settings.debounce, 1.0) * 2 ** (attempt - 1))
            self._pending.setdefault(key, self.clock.now() + delay)
            bound.warning("stock_sync.failed", error=reason[:300], attempt=attempt, retry_in_s=round(delay, 1))
            self._arm()
            return SyncResult(store_name, product_id, "failed", error=reason[:300])
        self._failures.pop(key, None)
        if before == count:
            bound.debug("stock_sync.unchanged", count=count)
            return SyncResult(store_name, product_id, "unchanged", count=count, before=before)
        bound.info("stock_sync.updated", before=before, count=count)
        return SyncResult(store_name, product_id, "updated", count=count, before=before)


async def sync_once(
    settings: Settings,
    *,
    marketplaces: Sequence[MarketplaceType],
    plugins: Mapping[str, Any],
    stores: Sequence[str] | None = None,
    product: str | None = None,
    pool: str | None = None,
    clock: Clock | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> list[SyncResult]:
    """One sync from a command's own process (``stock import``, ``softstore sync-stock``): every product of
    ``stores`` (all by default), or only ``product`` of the single store given, or every listing drawing on the
    shared ``pool``."""
    clock = clock or SystemClock()
    hub = ResourceHub(clock=clock, policy=NetPolicy.from_settings(settings.security))
    built = build_stores(settings, marketplaces, plugins, clock, transport, hub=hub)
    for store in built.values():  # a failure's log line must not carry an API key or a JWT
        REDACTOR.add_source(store.marketplace.secrets)
    for name in stores or ():
        if name not in built:
            raise ConfigError("--store", f"no store named {name!r}")
    engine = create_db_engine(settings.database)
    try:
        create_schema(engine)
        hub.engine = engine  # no cipher: a sync only counts keys, it never opens them
        sync = StockSync(lambda: built, settings.stock_sync, clock)
        if pool is not None:
            return await sync.sync_pool(pool)
        if product is not None and stores:
            result = await sync.sync_product(stores[0], product)
            return [result] if result is not None else []
        return await sync.sync_all(stores)
    finally:
        for store in built.values():
            await store.aclose()
        engine.dispose()


__all__ = ["StockSync", "SyncResult", "pool_listings", "sync_once"]
