"""``create_app(settings, marketplaces=[...], plugins={...})``: the receiver and the worker in one ASGI app.

The worker (with its APScheduler) is started in the app's lifespan, in the same event loop as uvicorn, and stopped
on shutdown after in-flight deliveries had their grace period. Everything the app needs is passed in: settings,
the marketplace types, the generator plugins, the clock and the HTTP transport.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import Engine
from starlette.applications import Starlette

from . import health, metrics, notify, receive
from .backoff import Backoff
from .cipher import load_cipher
from .clock import Clock, SystemClock
from .config import Settings
from .db import create_db_engine, create_schema, sqlite_path
from .logs import REDACTOR, Redactor
from .marketplace import MarketplaceType
from .metrics import UNKNOWN_STORE, Metrics
from .netguard import NetPolicy
from .queue import JobQueue
from .ratelimit import RateLimiter
from .resources import ResourceHub
from .retention import RetentionService
from .stores import Store, build_stores
from .worker import GENERATOR_BUDGET, Worker


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
    limiter: RateLimiter | None = None

    def metrics_webhook(self, store: str, result: str) -> None:
        self.metrics.webhook(store if store in self.stores else UNKNOWN_STORE, result)

    async def aclose(self) -> None:
        for store in self.stores.values():
            await store.marketplace.aclose()
        self.queue.close()
        self.engine.dispose()


def build_daemon(settings: Settings, *, marketplaces: Sequence[MarketplaceType], plugins: Mapping[str, Any],
                 clock: Clock | None = None, transport: httpx.AsyncBaseTransport | None = None,
                 redactor: Redactor = REDACTOR, generator_budget: float | None = None) -> Daemon:
    """Everything but the HTTP layer; raises ConfigError before touching the database if the config is bad."""
    clock = clock or SystemClock()
    hub = ResourceHub(clock=clock, policy=NetPolicy.from_settings(settings.security))
    stores = build_stores(settings, marketplaces, plugins, clock, transport, hub=hub)
    for store in stores.values():
        redactor.add_source(store.marketplace.secrets)
        redactor.add(*store.channel_secrets)
    cipher = load_cipher(settings.security, sqlite_path(settings.database.url))  # before the database: ConfigError
    engine = create_db_engine(settings.database.url, synchronous=settings.database.synchronous,
                              busy_timeout_ms=settings.database.busy_timeout_ms)
    create_schema(engine)
    hub.engine = engine  # plugins reach the database only once start-up checks have passed
    queue = JobQueue(engine, clock, cipher)
    backoff = Backoff(settings.delivery.retry_schedule, jitter=settings.delivery.jitter)
    daemon_ref: dict[str, Daemon] = {}
    observer = Metrics(clock)
    worker = Worker(queue, lambda: daemon_ref["d"].stores, settings.worker, backoff, clock,
                    generator_budget=generator_budget if generator_budget is not None else GENERATOR_BUDGET,
                    observer=observer)
    daemon = Daemon(settings=settings, engine=engine, queue=queue, stores=stores, worker=worker, clock=clock,
                    metrics=observer, resources=hub,
                    limiter=RateLimiter(settings.server.rate_limit, settings.server.store_rate_limits, clock))
    daemon_ref["d"] = daemon
    return daemon


def _status_server(daemon: Daemon) -> contextlib.AbstractAsyncContextManager[Any]:
    """The status page's server when ``status.enabled``, else a block that yields None."""
    if not daemon.settings.status.enabled:
        # Not even imported: the page's package (Jinja2 templates, routes) costs idle RSS that a daemon without it
        # never needs (docs/performance.md, idle memory).
        return contextlib.nullcontext()
    from .status.server import serve_status

    return serve_status(daemon)


def create_app(settings: Settings, *, marketplaces: Sequence[MarketplaceType], plugins: Mapping[str, Any],
               clock: Clock | None = None, transport: httpx.AsyncBaseTransport | None = None,
               start_worker: bool = True, **options: Any) -> Starlette:
    """The daemon as an ASGI app. With ``start_worker=False`` only the receiver runs (tests use ``drain()``)."""
    daemon = build_daemon(settings, marketplaces=marketplaces, plugins=plugins, clock=clock, transport=transport,
                          **options)

    # On PostgreSQL other replicas commit jobs too: their NOTIFY wakes this worker (None on SQLite).
    listener = notify.listener_for(settings.database.url, daemon.worker.wake) if start_worker else None

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        retention = None
        if start_worker:
            await daemon.worker.start()
            if settings.retention.days is not None:
                retention = RetentionService(daemon.engine, daemon.clock, settings.retention.days,
                                             settings.retention.interval)
                retention.start()
        if listener is not None:
            await listener.start()
        try:
            async with _status_server(daemon) as status_server:  # its own address; None unless status.enabled
                app.state.status_server = status_server
                yield
        finally:
            if listener is not None:
                await listener.stop()
            if retention is not None:
                retention.stop()
            if start_worker:
                await daemon.worker.stop(settings.worker.shutdown_grace)
            await daemon.aclose()

    # With admin.port set, /metrics lives only on the admin address (metrics.create_admin_app), not next to webhooks.
    admin_routes = metrics.routes() if settings.admin.port is None else []
    app = Starlette(routes=[*receive.routes(), *health.routes(), *admin_routes], lifespan=lifespan)
    app.state.daemon = daemon
    app.state.listener = listener
    return app
