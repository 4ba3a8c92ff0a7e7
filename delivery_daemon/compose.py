"""``create_app(settings, marketplaces=[...], plugins={...})``: the receiver and the worker in one ASGI app.

The worker is started in the app's lifespan, in the same event loop as uvicorn, and stopped on shutdown after
in-flight deliveries had their grace period. One APScheduler scheduler (``Daemon.scheduler``) runs all periodic
work: the worker's lease sweep, the stock sync's full pass, the retention purge and the missed-order watchdog each add
their jobs to it, and the lifespan starts it once and shuts it down once. Everything the app needs is passed in:
settings, the marketplace types, the generator plugins, the clock and the HTTP transport. The marketplace types this
build ships with are listed here, once (:func:`default_marketplaces`), and passed down from the commands that run.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import import_module
from typing import Any

import httpx
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from starlette.applications import Starlette

from delivery_daemon.backoff import Backoff
from delivery_daemon.clock import Clock, SystemClock
from delivery_daemon.config import Settings
from delivery_daemon.errors import ConfigError
from delivery_daemon.generators.resources import ResourceHub
from delivery_daemon.http import health, metrics, receive, revocations
from delivery_daemon.http.limits import RateLimiter
from delivery_daemon.http.metrics import UNKNOWN_STORE, Metrics
from delivery_daemon.logs import REDACTOR, Redactor, install_record_scrubber
from delivery_daemon.marketplaces.base import AdapterContext, Marketplace, MarketplaceType
from delivery_daemon.net.guard import NetPolicy
from delivery_daemon.pipeline.stores import Store, build_stores
from delivery_daemon.pipeline.worker import GENERATOR_BUDGET, Worker
from delivery_daemon.stock.sync import StockSync
from delivery_daemon.storage import notify
from delivery_daemon.storage.cipher import load_cipher
from delivery_daemon.storage.engine import create_db_engine, create_schema, sqlite_path
from delivery_daemon.storage.queue import JobQueue
from delivery_daemon.storage.rekey import seal_at_start
from delivery_daemon.storage.retention import RetentionService
from delivery_daemon.storage.stock_pool import StockError
from delivery_daemon.watchdog.patrol import Watchdog


@dataclass
class ShippedMarketplace:
    """A marketplace type this build ships with, by name; its module (``delivery_daemon.marketplaces.<module>``) is
    imported on the first :meth:`create`, when a store names it. A configuration uses one or two of the thirteen,
    and every adapter module imported at start is memory held for the process's life: together ~1 MB, PaddleClassic's
    RSA signatures alone pulling in cryptography's serialization modules (issue #26, item 5)."""

    name: str
    module: str
    type_name: str

    def load(self) -> MarketplaceType:
        """The type itself (its module imported now, once)."""
        kind: MarketplaceType = getattr(import_module(f"delivery_daemon.marketplaces.{self.module}"), self.type_name)()
        return kind

    def create(self, context: AdapterContext) -> Marketplace:
        return self.load().create(context)


SHIPPED = (
    ShippedMarketplace("softstore", "softstore", "SoftStore"),
    ShippedMarketplace("sellix", "sellix", "Sellix"),
    ShippedMarketplace("shoppy", "shoppy", "Shoppy"),
    ShippedMarketplace("stripe", "stripe_store", "StripeStore"),
    ShippedMarketplace("stripe-checkout", "stripe_checkout", "StripeCheckout"),
    ShippedMarketplace("virtual-stores", "virtual_stores", "VirtualStores"),
    ShippedMarketplace("standard-webhooks", "standard_webhooks", "StandardWebhooks"),
    ShippedMarketplace("lemonsqueezy", "lemonsqueezy", "LemonSqueezy"),
    ShippedMarketplace("polar", "polar", "Polar"),
    ShippedMarketplace("paddle", "paddle", "Paddle"),
    ShippedMarketplace("paddle-classic", "paddle_classic", "PaddleClassic"),
    ShippedMarketplace("gumroad", "gumroad", "Gumroad"),
    ShippedMarketplace("sellauth", "sellauth", "SellAuth"),
)


def default_marketplaces() -> list[MarketplaceType]:
    """The marketplace types this build ships with: the explicit list the CLI (and the demo, the stock-sync
    commands, the tests) hands to :func:`create_app` and :func:`~delivery_daemon.pipeline.stores.build_stores`.
    Each is a :class:`ShippedMarketplace`: its module is imported only for a store that uses it."""
    return list(SHIPPED)


@dataclass
class Daemon:
    """The running parts, reachable as ``app.state.daemon`` (for the routes, the CLI and tests)."""

    settings: Settings
    engine: Engine
    queue: JobQueue
    stores: dict[str, Store]
    worker: Worker
    clock: Clock
    resources: ResourceHub
    metrics: Metrics
    stock_sync: StockSync
    scheduler: AsyncIOScheduler  # the one scheduler of all periodic jobs (started by create_app's lifespan)
    retention: RetentionService | None = None  # None without retention.days
    limiter: RateLimiter | None = None
    generator_slots: asyncio.Semaphore | None = None  # synchronous (receiver) generator calls at once
    watchdog: Watchdog | None = None  # the missed-order watchdog (scheduled when watchdog.enabled)

    def schedule_periodic(self) -> None:
        """Add every component's periodic jobs to :attr:`scheduler` (again: replaces them, never doubles them)."""
        self.worker.schedule(self.scheduler)
        self.stock_sync.schedule(self.scheduler)
        if self.retention is not None:
            self.retention.schedule(self.scheduler)
        if self.watchdog is not None:
            self.watchdog.schedule(self.scheduler)

    def metrics_webhook(self, store: str, result: str) -> None:
        self.metrics.webhook(store if store in self.stores else UNKNOWN_STORE, result)

    async def aclose(self) -> None:
        for store in self.stores.values():
            await store.aclose()
        self.queue.close()
        self.engine.dispose()


def settings_secrets(settings: Settings) -> list[str]:
    """Secrets of the daemon's own sections (status page credentials, the database password), for the redactor."""
    status = settings.status
    found = [s.get_secret_value() for s in (status.password, status.token, status.session_secret) if s is not None]
    password = make_url(settings.database.url).password
    return [*found, *([str(password)] if password else [])]


def build_daemon(
    settings: Settings,
    *,
    marketplaces: Sequence[MarketplaceType],
    plugins: Mapping[str, Any],
    clock: Clock | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    redactor: Redactor = REDACTOR,
    generator_budget: float | None = None,
) -> Daemon:
    """Everything but the HTTP layer; raises ConfigError before touching the database if the config is bad."""
    clock = clock or SystemClock()
    hub = ResourceHub(clock=clock, policy=NetPolicy.from_settings(settings.security))
    stores = build_stores(settings, marketplaces, plugins, clock, transport, hub=hub)
    for store in stores.values():
        redactor.add_source(store.marketplace.secrets)
        redactor.add(*store.static_secrets())
    redactor.add(*settings_secrets(settings))
    install_record_scrubber(redactor)  # third-party stdlib log records too, even when the embedder set up logging
    cipher = load_cipher(settings.security, sqlite_path(settings.database.url))  # before the database: ConfigError
    engine = create_db_engine(settings.database)
    create_schema(engine)
    try:
        seal_at_start(engine, clock, cipher)  # an earlier release's plaintext stock keys; then VACUUM
    except StockError as exc:
        raise ConfigError("security", f"cannot seal the stock pool: {exc}") from None
    hub.engine, hub.cipher = engine, cipher  # plugins reach the database only once start-up checks have passed
    queue = JobQueue(engine, clock, cipher)
    backoff = Backoff(settings.delivery.retry_schedule, jitter=settings.delivery.jitter)
    daemon_ref: dict[str, Daemon] = {}
    observer = Metrics(clock)
    stock_sync = StockSync(lambda: daemon_ref["d"].stores, settings.stock_sync, clock)
    worker = Worker(
        queue,
        lambda: daemon_ref["d"].stores,
        settings.worker,
        backoff,
        clock,
        generator_budget=generator_budget if generator_budget is not None else GENERATOR_BUDGET,
        observers=[observer, stock_sync],
    )
    days = settings.retention.days
    retention = RetentionService(engine, clock, days, settings.retention.interval) if days is not None else None
    daemon = Daemon(
        settings=settings,
        engine=engine,
        queue=queue,
        stores=stores,
        worker=worker,
        clock=clock,
        metrics=observer,
        stock_sync=stock_sync,
        scheduler=AsyncIOScheduler(),
        retention=retention,
        resources=hub,
        limiter=RateLimiter(settings.server.rate_limit, settings.server.store_rate_limits, clock),
        generator_slots=asyncio.Semaphore(settings.worker.concurrency),
        watchdog=Watchdog(
            lambda: daemon_ref["d"].stores,
            queue,
            settings.watchdog,
            clock,
            wake=worker.wake,
            observers=[observer],
        ),
    )
    daemon_ref["d"] = daemon
    return daemon


def create_app(
    settings: Settings,
    *,
    marketplaces: Sequence[MarketplaceType],
    plugins: Mapping[str, Any],
    clock: Clock | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    start_worker: bool = True,
    **options: Any,
) -> Starlette:
    """The daemon as an ASGI app. With ``start_worker=False`` only the receiver runs (tests use ``drain()``)."""
    daemon = build_daemon(
        settings, marketplaces=marketplaces, plugins=plugins, clock=clock, transport=transport, **options
    )

    # On PostgreSQL other replicas commit jobs too: their NOTIFY wakes this worker (None on SQLite).
    listener = notify.listener_for(settings.database.url, daemon.worker.wake) if start_worker else None

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        scheduler = daemon.scheduler
        if start_worker:
            await daemon.worker.start()
            await daemon.stock_sync.start()
            daemon.schedule_periodic()
            scheduler.start()
        if listener is not None:
            await listener.start()
        try:
            yield
        finally:
            if listener is not None:
                await listener.stop()
            if scheduler.running:
                scheduler.shutdown(wait=False)  # first: no periodic job starts while the worker stops
            if start_worker:
                await daemon.stock_sync.stop()
                await daemon.worker.stop(settings.worker.shutdown_grace)
            await daemon.aclose()

    # With admin.port set, /metrics lives only on the admin address (metrics.create_admin_app), not next to webhooks.
    admin_routes = metrics.routes() if settings.admin.port is None else []
    app = Starlette(
        routes=[*receive.routes(), *revocations.routes(), *health.routes(), *admin_routes], lifespan=lifespan
    )
    app.state.daemon = daemon
    app.state.listener = listener
    return app
