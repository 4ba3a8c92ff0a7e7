"""Three ``delivery-daemon serve`` processes on one PostgreSQL database, webhooks spread across them, one SIGKILLed
mid-run: the marketplace's own record must show every order delivered exactly once, and, for a product served
from the stock pool, no key issued to two orders."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import create_engine, func, select

from delivery_daemon.cli import main
from delivery_daemon.clock import SystemClock
from delivery_daemon.http.serving import serve
from delivery_daemon.reference.softstore import SoftStoreMarketplace
from delivery_daemon.storage.models import ATTEMPTS, JOBS
from delivery_daemon.storage.stock_pool import KEYS, StockPool
from tests.support.multistore import free_port

pytestmark = pytest.mark.postgres

ORDERS = 45
API_KEY = "replica-test-api-key-0123456789"


def replica_config(path: Path, db_url: str, port: int, api_base: str, default: dict[str, Any] | None = None) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "database": {"url": db_url},
                "server": {"host": "127.0.0.1", "port": port},
                # Short leases and polls: the killed replica's jobs come back within seconds (real clock, subprocesses).
                "worker": {"concurrency": 4, "lease_seconds": 3, "poll_interval": 0.5, "claim_batch": 4},
                "delivery": {"retry_schedule": [0.5, 1, 1, 2, 2, 5, 5, 10], "timeout": 10, "jitter": False},
                "logging": {"format": "json", "level": "info"},
                "stores": [
                    {
                        "name": "shop",
                        "marketplace": "softstore",
                        "api_url": api_base,
                        "api_key": API_KEY,
                        "default": default or {"generator": "pattern"},
                    }
                ],
            }
        )
    )
    return path


def start_replica(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """``delivery-daemon serve`` exactly as an operator runs it, its output in ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "delivery_daemon", "serve", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=config.parent,
            env={**os.environ, "PYTHONPATH": str(Path.cwd())},
        )


async def wait_until(probe: Callable[[], Any], limit: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not await probe():
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not within {limit}s")
        await asyncio.sleep(0.1)


async def kill_holding_a_lease(proc: subprocess.Popen[bytes], db_url: str) -> None:
    """SIGKILL ``proc`` once the database shows it holding a running job's lease (owners are host:pid:nonce)."""
    engine = create_engine(db_url)

    async def holds() -> bool:
        with engine.connect() as conn:
            return bool(
                conn.execute(
                    select(func.count()).where(JOBS.c.state == "running", JOBS.c.lease_owner.like(f"%:{proc.pid}:%"))
                ).scalar_one()
            )

    try:
        await wait_until(holds, 30, f"replica {proc.pid} holding a lease")
    finally:
        engine.dispose()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


async def _all_ready(client: httpx.AsyncClient, urls: list[str]) -> None:
    """Wait until every replica's /readyz answers 200."""
    for url in urls:

        async def ready(url: str = url) -> bool:
            try:
                return (await client.get(f"{url}/readyz")).status_code == 200
            except httpx.HTTPError:
                return False

        await wait_until(ready, 90, f"replica {url} ready")


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every replica still running, then wait (SIGKILL one that does not stop within 30 s)."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_three_replicas_one_killed_every_order_delivered_once(tmp_path: Path, pg_url: str) -> None:
    """Round-robin webhooks over 3 replicas, SIGKILL one holding leases: each order accepted exactly once."""
    market = SoftStoreMarketplace(api_key=API_KEY)
    market.add_product("p1", count=10_000)
    procs: list[subprocess.Popen[bytes]] = []
    async with serve(market.app) as market_server, httpx.AsyncClient(timeout=10) as client:
        market.bind(market_server.url)
        urls = []
        for i in range(3):
            port = free_port()
            config = replica_config(tmp_path / f"r{i}.yaml", pg_url, port, market.api_base)
            procs.append(start_replica(config, tmp_path / f"r{i}.log"))
            urls.append(f"http://127.0.0.1:{port}")
        try:
            await _all_ready(client, urls)

            victim = 1
            # Deliveries answered slowly: the victim is sure to hold leased, in-flight jobs when it is killed.
            market.faults.slow_next_deliveries(ORDERS, 0.3)
            placed = []
            for n in range(ORDERS):
                order = await market.place_order("p1", send_webhook=False)
                placed.append(order.id_order)
                alive = [i for i in range(3) if procs[i].poll() is None]
                target = n % 3 if n % 3 in alive else alive[n % len(alive)]  # the load balancer skips the dead
                response = await market.send_webhook(order.id_order, url=f"{urls[target]}/webhooks/shop")
                assert response.status_code == 200, response.text
                if n == ORDERS // 2:  # the victim just received order n (n % 3 == victim): it will lease it
                    await kill_holding_a_lease(procs[victim], pg_url)

            engine = create_engine(pg_url)

            async def all_delivered() -> bool:
                # Both records: the marketplace accepted every order and the daemon recorded every job final.
                if not all(market.accepted(order_id) is not None for order_id in placed):
                    return False
                with engine.connect() as conn:
                    open_jobs = conn.execute(select(func.count()).where(JOBS.c.state != "delivered")).scalar_one()
                return open_jobs == 0

            try:
                await wait_until(all_delivered, 120, "every order delivered")
            except AssertionError:
                with engine.connect() as conn:
                    for row in conn.execute(
                        select(ATTEMPTS).where(
                            ATTEMPTS.c.job_id.in_(select(JOBS.c.id).where(JOBS.c.state != "delivered"))
                        )
                    ).all():
                        print(row)
                raise
        finally:
            _stop(procs)

    for order_id in placed:
        assert [d.status for d in market.deliveries(order_id)].count(200) == 1, order_id
    assert market.summary()["duplicates"] == 0
    with engine.connect() as conn:
        jobs = conn.execute(select(JOBS.c.state, func.count()).group_by(JOBS.c.state)).all()
        delivered_records = conn.execute(
            select(ATTEMPTS.c.job_id, func.count()).where(ATTEMPTS.c.state == "delivered").group_by(ATTEMPTS.c.job_id)
        ).all()
        expired = conn.execute(select(func.count()).where(ATTEMPTS.c.outcome == "expired")).scalar_one()
    engine.dispose()
    assert dict(jobs) == {"delivered": ORDERS}
    assert len(delivered_records) == ORDERS and {count for _, count in delivered_records} == {1}
    assert expired >= 1  # the victim really died holding leases that another replica took over


STOCK_ORDERS = 45
STOCK_TEMPLATE = "Order {order_id}\n{keys_lines}"


def _delivered_keys(market: SoftStoreMarketplace, order_id: str) -> list[str]:
    accepted = market.accepted(order_id)
    assert accepted is not None, order_id
    return [line for line in str(accepted.json["text"]).splitlines()[1:] if line.strip()]


async def test_stock_pool_across_replicas_with_a_kill_and_an_import_mid_run(tmp_path: Path, pg_url: str) -> None:
    """3 replicas serve a stock product, one is SIGKILLed and keys are imported mid-run: each order delivered once
    with its own keys, no key on two orders, and the pool's counts match what was delivered."""
    market = SoftStoreMarketplace(api_key=API_KEY)
    market.add_product("p1", count=10_000)
    quantities = [1 + n % 3 for n in range(STOCK_ORDERS)]  # 90 keys wanted
    first = [f"FIRST-{n:04d}" for n in range(40)]  # runs out after about a third of the orders: the rest wait
    second = [f"SECOND-{n:04d}" for n in range(70)]
    (tmp_path / "first.txt").write_text("\n".join(first))
    (tmp_path / "second.txt").write_text("\n".join(second + first[:5]))  # 5 already in the pool: skipped
    procs: list[subprocess.Popen[bytes]] = []
    async with serve(market.app) as market_server, httpx.AsyncClient(timeout=10) as client:
        market.bind(market_server.url)
        urls, configs = [], []
        for i in range(3):
            port = free_port()
            configs.append(
                replica_config(
                    tmp_path / f"r{i}.yaml",
                    pg_url,
                    port,
                    market.api_base,
                    {"generator": "stock", "template": STOCK_TEMPLATE},
                )
            )
            procs.append(start_replica(configs[i], tmp_path / f"r{i}.log"))
            urls.append(f"http://127.0.0.1:{port}")

        def stock(*argv: str) -> int:
            return main(["stock", *argv, "--config", str(configs[0])])

        try:
            await _all_ready(client, urls)
            assert (
                await asyncio.to_thread(
                    stock, "import", "--store", "shop", "--product", "p1", str(tmp_path / "first.txt")
                )
                == 0
            )
            market.faults.slow_next_deliveries(STOCK_ORDERS, 0.3)  # the victim holds leases when it dies
            placed = []
            for n, quantity in enumerate(quantities):
                order = await market.place_order("p1", quantity, send_webhook=False)
                placed.append(order.id_order)
                alive = [i for i in range(3) if procs[i].poll() is None]
                target = n % 3 if n % 3 in alive else alive[n % len(alive)]
                response = await market.send_webhook(order.id_order, url=f"{urls[target]}/webhooks/shop")
                assert response.status_code == 200, response.text
                if n == 13:  # replica 1 just received order 13, and keys are left for it: it will lease it
                    await kill_holding_a_lease(procs[1], pg_url)
                if n == 2 * STOCK_ORDERS // 3:  # the refill, from a shell, while orders wait and arrive
                    assert (
                        await asyncio.to_thread(
                            stock, "import", "--store", "shop", "--product", "p1", str(tmp_path / "second.txt")
                        )
                        == 0
                    )

            engine = create_engine(pg_url)

            async def all_delivered() -> bool:
                # Both records: the marketplace accepted every order and the daemon recorded every job final.
                if not all(market.accepted(order_id) is not None for order_id in placed):
                    return False
                with engine.connect() as conn:
                    return conn.execute(select(func.count()).where(JOBS.c.state != "delivered")).scalar_one() == 0

            await wait_until(all_delivered, 120, "every order delivered")
        finally:
            _stop(procs)

    owner: dict[str, str] = {}
    for order_id, quantity in zip(placed, quantities, strict=True):
        assert [d.status for d in market.deliveries(order_id)].count(200) == 1, order_id
        keys = _delivered_keys(market, order_id)
        assert len(keys) == len(set(keys)) == quantity, (order_id, keys)
        for key in keys:
            assert owner.setdefault(key, order_id) == order_id, f"{key} issued to {owner[key]} and {order_id}"
    assert set(owner) <= set(first) | set(second)
    levels = StockPool(engine, SystemClock()).levels("shop")
    with engine.connect() as conn:
        held: dict[str | None, int] = dict(
            conn.execute(
                select(KEYS.c.claimed_by, func.count())
                .where(KEYS.c.claimed_by.is_not(None))
                .group_by(KEYS.c.claimed_by)
            ).all()
        )
        jobs: dict[str, int] = dict(conn.execute(select(JOBS.c.state, func.count()).group_by(JOBS.c.state)).all())
        waited = conn.execute(select(func.count()).where(ATTEMPTS.c.outcome == "out_of_stock")).scalar_one()
        expired = conn.execute(select(func.count()).where(ATTEMPTS.c.outcome == "expired")).scalar_one()
    engine.dispose()
    assert [(lv.product_id, lv.issued, lv.available) for lv in levels] == [("p1", 90, 110 - 90)]
    assert held == {f"shop:{order_id}": quantity for order_id, quantity in zip(placed, quantities, strict=True)}
    assert jobs == {"delivered": STOCK_ORDERS}
    assert waited >= 1  # orders really waited for the mid-run import
    assert expired >= 1  # the victim died holding a lease that another replica took over
