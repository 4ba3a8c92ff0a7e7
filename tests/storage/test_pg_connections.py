"""Connections each replica holds on PostgreSQL, sampled from ``pg_stat_activity`` while the replicas start, idle and
deliver: the figures docs/scaling.md ("Connections to expect") gives operators for sizing ``max_connections``."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import psycopg
import pytest
from starlette.applications import Starlette

from delivery_daemon.clock import SystemClock
from delivery_daemon.compose import Daemon, create_app, default_marketplaces
from delivery_daemon.config import Settings
from delivery_daemon.generators.discovery import discover
from delivery_daemon.http.serving import serve
from delivery_daemon.reference.softstore import SoftStoreMarketplace
from delivery_daemon.storage.notify import libpq_url
from delivery_daemon.storage.stock_pool import StockPool
from tests.guarantees.test_replicas_kill import wait_until
from tests.storage.test_postgres_replicas import wait_for
from tests.support.stack import PRODUCT, STORE, stack_settings

pytestmark = pytest.mark.postgres

STEADY_PER_REPLICA = 2
"""docs/scaling.md: the queue thread's connection and the LISTEN connection, when idle or delivering generated keys."""
CEILING_PER_REPLICA = 16
"""docs/scaling.md: SQLAlchemy's default pool (5 kept + 10 overflow) plus the LISTEN connection."""
KEPT_PER_REPLICA = 7
"""docs/scaling.md: what stays open after a burst (the queue thread's, 5 kept by the pool, and LISTEN)."""

SAMPLE_INTERVAL = 0.01
QUIET_SAMPLES = 30  # samples (~0.3 s) of a window in which the replicas have nothing to do

# Client backends only: an autovacuum worker also carries the database's name and would count as a daemon connection.
COUNT_OTHERS = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
    "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
)


class ConnectionSampler:
    """Counts the daemon database's connections (its own excluded) every ``interval`` seconds on a thread of its
    own, so that a busy event loop cannot make it miss a peak."""

    def __init__(self, url: str, interval: float = SAMPLE_INTERVAL) -> None:
        conninfo = libpq_url(url)
        assert conninfo is not None, url
        self.interval = interval
        self.samples: list[int] = []
        self._conn = psycopg.connect(conninfo, autocommit=True)  # autocommit: each count reads a fresh snapshot
        self._stopped = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="pg-sampler", daemon=True)

    def __enter__(self) -> ConnectionSampler:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._stopped.set()
        self._thread.join()
        self._conn.close()

    def _run(self) -> None:
        try:
            while not self._stopped.is_set():
                row = self._conn.execute(COUNT_OTHERS).fetchone()
                assert row is not None
                self.samples.append(int(row[0]))  # one append per sample: atomic, read by the test's thread
                self._stopped.wait(self.interval)  # the sampling interval, not a synchronisation
        except BaseException as exc:  # kept for the test's thread: a dead sampler must fail the test, not time out
            self._error = exc

    def _check(self) -> None:
        if self._error is not None:
            raise AssertionError("the sampler stopped") from self._error

    def mark(self) -> int:
        """The index the next sample will have (to slice out a phase of the run)."""
        return len(self.samples)

    def peak(self, since: int = 0, until: int | None = None) -> int:
        self._check()
        window = self.samples[since:until]
        assert window, "no sample in this window"
        return max(window)

    async def wait_samples(self, count: int) -> None:
        """Return once ``count`` more samples were taken (a window measured by samples, not by a sleep)."""
        target = len(self.samples) + count
        await wait_for(lambda: self._error is not None or len(self.samples) >= target, limit=30)
        self._check()


def replica_settings(db_url: str, api_base: str, api_key: str, **products: Any) -> Settings:
    # A 0.1 s poll: each replica's periodic work (lease renewal, expiry sweep, wake-up) runs many times per window.
    return stack_settings(
        Path("unused.db"),
        api_base,
        api_key,
        products=products,
        database={"url": db_url},
        worker={"poll_interval": 0.1, "lease_seconds": 30},
    )


@contextlib.asynccontextmanager
async def replicas(settings: Settings, count: int) -> AsyncIterator[list[tuple[Starlette, str]]]:
    """``count`` daemons on one database, each with its worker, its LISTEN connection and its own pool (what
    ``delivery-daemon serve`` builds), yielded once every one of them is listening."""
    async with contextlib.AsyncExitStack() as stack:
        running: list[tuple[Starlette, str]] = []
        for _ in range(count):
            app = create_app(
                settings,
                marketplaces=default_marketplaces(),
                plugins=dict(discover()),
                clock=SystemClock(),
                start_worker=True,
            )
            server = await stack.enter_async_context(serve(app))
            running.append((app, server.url))
        for app, _url in running:
            await asyncio.wait_for(app.state.listener.listening.wait(), timeout=60)
        yield running


async def place(market: SoftStoreMarketplace, urls: list[str], orders: int, quantity: int = 1) -> list[str]:
    """Place ``orders`` orders at once, their webhooks spread round-robin over ``urls`` as a load balancer would."""
    placed = [(await market.place_order(PRODUCT, quantity, send_webhook=False)).id_order for _ in range(orders)]
    responses = await asyncio.gather(
        *(
            market.send_webhook(order_id, url=f"{urls[n % len(urls)]}/webhooks/{STORE}")
            for n, order_id in enumerate(placed)
        )
    )
    assert [r.status_code for r in responses] == [200] * orders
    return placed


async def test_replicas_idle_and_delivering_generated_keys_hold_two_connections_each(pg_url: str) -> None:
    """Three replicas starting, idle, delivering generated keys (with /readyz probed) and stopping hold at most 2
    connections each."""
    api_key = secrets.token_hex(20)
    market = SoftStoreMarketplace(api_key=api_key)
    market.add_product(PRODUCT, count=1000)
    async with serve(market.app) as market_server, httpx.AsyncClient(timeout=10) as client:
        market.bind(market_server.url)
        settings = replica_settings(pg_url, market.api_base, api_key)
        with ConnectionSampler(pg_url) as sampler:  # from before the first replica: start-up is measured too
            async with replicas(settings, 3) as running:
                urls = [url for _app, url in running]
                steady = sampler.mark()
                await sampler.wait_samples(QUIET_SAMPLES)
                idle = sampler.peak(steady)

                busy = sampler.mark()
                # Answered late: every replica holds several leased, in-flight deliveries at once.
                market.faults.slow_next_deliveries(30, 0.2)
                placed, probes = await asyncio.gather(
                    place(market, urls, 30), asyncio.gather(*(client.get(f"{urls[n % 3]}/readyz") for n in range(15)))
                )
                assert {r.status_code for r in probes} == {200}
                await wait_for(lambda: all(market.accepted(order_id) for order_id in placed), limit=60)
                delivering = sampler.peak(busy)

                await sampler.wait_samples(QUIET_SAMPLES)
                whole = sampler.peak(steady)
        overall = sampler.peak()

    print(
        f"\npg connections, 3 replicas: idle {idle}, delivering {delivering}, steady peak {whole}, "
        f"with start-up and shutdown {overall} ({len(sampler.samples)} samples)"
    )
    assert idle >= 3  # every replica's LISTEN connection is seen: the filter counts the daemons' connections at all
    assert whole <= 3 * STEADY_PER_REPLICA, (idle, delivering)
    # Start-up (schema check, listener) and shutdown (leases handed back) borrow nothing beyond those 2 either.
    assert overall <= 3 * STEADY_PER_REPLICA


async def test_stock_claims_and_scrapes_stay_under_the_ceiling_and_the_pool_shrinks_after(pg_url: str) -> None:
    """A replica serving stock keys to many orders at once while /metrics is scraped never holds more than 16
    connections, and once the burst is over keeps at most 6 open."""
    api_key = secrets.token_hex(20)
    market = SoftStoreMarketplace(api_key=api_key)
    market.add_product(PRODUCT, count=1000)
    async with serve(market.app) as market_server, httpx.AsyncClient(timeout=10) as client:
        market.bind(market_server.url)
        settings = replica_settings(
            pg_url, market.api_base, api_key, **{PRODUCT: {"generator": "stock", "template": "Keys:\n{keys_lines}"}}
        )
        with ConnectionSampler(pg_url) as sampler:
            async with replicas(settings, 1) as [(app, url)]:
                daemon: Daemon = app.state.daemon
                pool = StockPool(daemon.engine, daemon.clock)  # no encryption key configured: keys stored as-is
                keys = [f"KEY-{n:04d}" for n in range(100)]
                await asyncio.to_thread(pool.import_keys, STORE, PRODUCT, keys)

                # worker.concurrency (32) orders generating at once: each stock claim borrows a pooled connection.
                placed, scrapes = await asyncio.gather(
                    place(market, [url], 40, quantity=2),
                    asyncio.gather(*(client.get(f"{url}/metrics") for _ in range(10))),
                )
                assert {r.status_code for r in scrapes} == {200}
                await wait_for(lambda: all(market.accepted(order_id) for order_id in placed), limit=60)
                burst = sampler.peak()

                async def settled() -> bool:
                    counts = await daemon.queue.counts()
                    return counts["running"] == 0 and counts["queued"] == 0

                await wait_until(settled, 60, "every job final")
                after = sampler.mark()
                await sampler.wait_samples(QUIET_SAMPLES)
                kept = sampler.peak(after)

    print(f"\npg connections, 1 replica serving stock: burst peak {burst}, kept after the burst {kept}")
    assert kept >= 1  # the LISTEN connection is seen: the filter counts the daemon's connections at all
    assert burst <= CEILING_PER_REPLICA
    assert kept <= KEPT_PER_REPLICA
