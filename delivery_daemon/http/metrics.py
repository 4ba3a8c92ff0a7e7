"""``GET /metrics`` in the Prometheus text format (prometheus-client), and the admin app that can serve it apart.

Counters and histograms move as things happen (the receiver and the worker call :class:`Metrics`); the gauges that
describe the database and the generators (jobs per state, age of the oldest unfinished job, stock left) are read at
scrape time, so they are right even when another process (``orders retry``) changed the queue.

Each daemon has its own :class:`~prometheus_client.CollectorRegistry`, so two daemons in one process (tests) never
share numbers. With ``admin.token`` set, a scrape needs ``Authorization: Bearer <token>``; with ``admin.port`` set,
``/metrics`` is served only on that address (see :func:`create_admin_app`) and not on the public webhook port.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import Any, Protocol

import anyio
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, disable_created_metrics
from prometheus_client.exposition import choose_encoder
from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from delivery_daemon import __version__
from delivery_daemon.clock import Clock
from delivery_daemon.config import Settings
from delivery_daemon.http import health
from delivery_daemon.pipeline.stores import Store
from delivery_daemon.stock.sync import stock_remaining
from delivery_daemon.storage.jobs import QueueError, Transition
from delivery_daemon.storage.missed import count_open
from delivery_daemon.storage.models import Job, JobState
from delivery_daemon.storage.reads import oldest_unfinished

log = structlog.get_logger("delivery_daemon.http.metrics")

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 7200, 36000, 86400)
"""Seconds from webhook to delivered: sub-second on the hot path, hours when the marketplace was down."""

GENERATOR_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

UNKNOWN_STORE = "_unknown"
"""The ``store`` label for webhooks to a store that is not configured (bounded label values, whatever is posted)."""


class MetricsParts(health.ReadinessParts, Protocol):
    """What a scrape and the admin app read of the running daemon (``app.state.daemon``, a
    :class:`~delivery_daemon.compose.Daemon`)."""

    settings: Settings
    engine: Engine
    stores: dict[str, Store]
    metrics: Metrics


class Metrics:
    """The daemon's metrics; also the worker's :class:`~delivery_daemon.pipeline.observers.Observer`."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        # No <name>_created series: a second series per counter and histogram child, holding its creation time,
        # which Prometheus ignores (the counter's reset is seen in its value) and storage pays for. The switch is
        # process-wide in prometheus_client and read at each scrape.
        disable_created_metrics()  # type: ignore[no-untyped-call]  # prometheus_client leaves it unannotated
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes, open fds, start time
        build = Gauge(
            "delivery_daemon_build_info", "Always 1; the running release in the version label.", ["version"], registry=r
        )
        build.labels(version=__version__).set(1)
        self.webhooks = Counter(
            "delivery_daemon_webhooks_received",
            "Webhooks received, by store and result (accepted, duplicate, ignored, rejected_<status>).",
            ["store", "result"],
            registry=r,
        )
        self.deliveries = Counter(
            "delivery_daemon_deliveries",
            "Job outcomes: delivered, already (the marketplace "
            "had it), retry, dead, out_of_stock, held, cancelled (a refund or dispute arrived "
            "during the attempt, which did not deliver).",
            ["store", "outcome"],
            registry=r,
        )
        self.jobs = Gauge("delivery_daemon_jobs", "Jobs in the database, by state.", ["state"], registry=r)
        self.oldest = Gauge(
            "delivery_daemon_oldest_pending_job_age_seconds",
            "Age of the oldest job not yet delivered, dead or cancelled (0 when there is none).",
            registry=r,
        )
        self.latency = Histogram(
            "delivery_daemon_delivery_latency_seconds",
            "From the webhook's arrival to the marketplace's 200 for the delivery.",
            ["store"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stock = Gauge(
            "delivery_daemon_stock_remaining",
            "Keys left, for generators that report stock.",
            ["store", "product"],
            registry=r,
        )
        self.flagged = Counter(
            "delivery_daemon_orders_flagged",
            "Orders delivered and then refunded or disputed (or "
            "refunded during a delivery attempt that succeeded): a buyer who got their money back "
            "holds the keys. By store and kind (refunded, disputed).",
            ["store", "kind"],
            registry=r,
        )
        self.revocations = Counter(
            "delivery_daemon_revocations",
            "Revocations the worker ran (a refunded, disputed, cancelled, revoked or re-issued order's content taken "
            "back), by store and outcome: done, retry (tried again later), dead (given up).",
            ["store", "outcome"],
            registry=r,
        )
        self.generator = Histogram(
            "delivery_daemon_generator_duration_seconds",
            "Time a generator took for one order.",
            ["generator"],
            buckets=GENERATOR_BUCKETS,
            registry=r,
        )
        self.watchdog_runs = Counter(
            "delivery_daemon_watchdog_runs",
            "Missed-order watchdog runs, by store and result (ok, failed: the marketplace's list could not be read).",
            ["store", "result"],
            registry=r,
        )
        self.watchdog_orders = Counter(
            "delivery_daemon_watchdog_orders",
            "Paid orders the watchdog listed, by store and outcome (had_job, queued, raced, missed, still_missed, "
            "too_recent); queued are orders whose webhook never came, missed are raised for the seller.",
            ["store", "outcome"],
            registry=r,
        )
        self.missed_open = Gauge(
            "delivery_daemon_missed_orders",
            "Missed orders still without a job (the seller must act), by store; read from the database at scrape.",
            ["store"],
            registry=r,
        )

    # -- events ----------------------------------------------------------------------------------------------

    def webhook(self, store: str, result: str) -> None:
        self.webhooks.labels(store=store, result=result).inc()

    def job_finished(self, job: Job, change: Transition) -> None:
        self.deliveries.labels(store=job.store, outcome=change.outcome).inc()
        if change.state is JobState.DELIVERED and change.outcome == "delivered":
            self.latency.labels(store=job.store).observe(max(0.0, self.clock.now() - job.created_at))
        if change.state is JobState.DELIVERED and job.flag is not None:  # a refund settled by the worker
            self.order_flagged(job.store, job.flag)

    def order_flagged(self, store: str, kind: str) -> None:
        """A delivered order was refunded or disputed (the receiver, or the worker settling a pending refund)."""
        self.flagged.labels(store=store, kind=kind).inc()

    def watchdog_run(self, store: str, result: str) -> None:
        self.watchdog_runs.labels(store=store, result=result).inc()

    def watchdog_order(self, store: str, outcome: str) -> None:
        self.watchdog_orders.labels(store=store, outcome=outcome).inc()

    def generated(self, generator: str, seconds: float) -> None:
        self.generator.labels(generator=generator).observe(seconds)

    def revocation_finished(self, store: str, outcome: str) -> None:
        self.revocations.labels(store=store, outcome=outcome).inc()

    # -- scrape ----------------------------------------------------------------------------------------------

    async def refresh(self, daemon: MetricsParts) -> None:
        """Read the gauges' current values from the database and the generators."""
        for state, count in (await daemon.queue.counts()).items():
            self.jobs.labels(state=state).set(count)
        oldest = await anyio.to_thread.run_sync(oldest_unfinished, daemon.engine)
        self.oldest.set(max(0.0, self.clock.now() - oldest) if oldest is not None else 0.0)
        missed = await anyio.to_thread.run_sync(count_open, daemon.engine)
        for name in {*daemon.stores, *missed}:
            self.missed_open.labels(store=name).set(missed.get(name, 0))
        for store in daemon.stores.values():
            for product_id, product in store.products.items():
                remaining = await _stock(product.generator)
                if remaining is not None:
                    self.stock.labels(store=store.name, product=product_id).set(remaining)


async def _stock(generator: Any) -> int | None:
    """:func:`~delivery_daemon.stock.sync.stock_remaining` for the scrape; a plugin's error is logged,
    not raised."""
    try:
        return await stock_remaining(generator)
    except Exception as exc:  # a plugin's bug must not break the scrape
        log.warning("metrics.stock_failed", generator=type(generator).__name__, error=f"{type(exc).__name__}")
        return None


def _authorised(request: Request, daemon: MetricsParts) -> bool:
    token = daemon.settings.admin.token
    if token is None:
        return True
    expected = f"Bearer {token.get_secret_value()}".encode()
    return hmac.compare_digest(request.headers.get("authorization", "").encode(), expected)


async def metrics(request: Request) -> Response:
    daemon: MetricsParts = request.app.state.daemon
    if not _authorised(request, daemon):
        return JSONResponse(
            {"error": "a valid bearer token is required"},
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    try:
        await daemon.metrics.refresh(daemon)
    except QueueError as exc:
        log.error("metrics.refresh_failed", error=str(exc))  # still serve the counters we have
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encoder(daemon.metrics.registry), media_type=content_type)


def routes() -> list[Route]:
    return [Route("/metrics", metrics)]


def create_admin_app(daemon: MetricsParts, extra: Sequence[BaseRoute] = ()) -> Starlette:
    """``/metrics``, ``/healthz`` and ``/readyz`` for the admin address (``admin.port``), plus ``extra`` routes
    (the status page's mount when ``status.enabled``); no webhooks here."""
    app = Starlette(routes=[*routes(), *health.routes(), *extra])
    app.state.daemon = daemon
    return app
