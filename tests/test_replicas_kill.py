"""Three ``delivery-daemon serve`` processes on one PostgreSQL database, webhooks spread across them, one SIGKILLed
mid-run: the marketplace's own record must show every order delivered exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import create_engine, func, select

from delivery_daemon.models import Attempt, Job
from delivery_daemon.reference.softstore import SoftStoreMarketplace
from delivery_daemon.serving import serve

pytestmark = pytest.mark.postgres

ORDERS = 45
API_KEY = "replica-test-api-key-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def replica_config(path: Path, db_url: str, port: int, api_base: str) -> Path:
    path.write_text(yaml.safe_dump({
        "database": {"url": db_url},
        "server": {"host": "127.0.0.1", "port": port},
        # Short leases and polls so the killed replica's jobs come back within seconds (real clock: subprocesses).
        "worker": {"concurrency": 4, "lease_seconds": 3, "poll_interval": 0.5, "claim_batch": 4},
        "delivery": {"retry_schedule": [0.5, 1, 1, 2, 2, 5, 5, 10], "timeout": 10, "jitter": False},
        "logging": {"format": "json", "level": "info"},
        "stores": [{"name": "shop", "marketplace": "softstore", "api_url": api_base, "api_key": API_KEY,
                    "default": {"generator": "pattern"}}],
    }))
    return path


def start_replica(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """``delivery-daemon serve`` exactly as an operator runs it, its output in ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "delivery_daemon", "serve", "--config", str(config)],
                                stdout=out, stderr=subprocess.STDOUT, cwd=config.parent,
                                env={**os.environ, "PYTHONPATH": str(Path.cwd())})


async def wait_until(probe: Callable[[], Any], limit: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not await probe():
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not within {limit}s")
        await asyncio.sleep(0.1)


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
            for url in urls:
                async def ready(url: str = url) -> bool:
                    try:
                        return (await client.get(f"{url}/readyz")).status_code == 200
                    except httpx.HTTPError:
                        return False
                await wait_until(ready, 90, f"replica {url} ready")

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
                if n == ORDERS // 2:
                    procs[victim].send_signal(signal.SIGKILL)
                    procs[victim].wait(timeout=30)

            engine = create_engine(pg_url)

            async def all_delivered() -> bool:
                # Both records: the marketplace accepted every order and the daemon recorded every job final.
                if not all(market.accepted(order_id) is not None for order_id in placed):
                    return False
                with engine.connect() as conn:
                    open_jobs = conn.execute(
                        select(func.count()).where(Job.state != "delivered")  # type: ignore[arg-type]
                    ).scalar_one()
                return open_jobs == 0

            try:
                await wait_until(all_delivered, 120, "every order delivered")
            except AssertionError:
                with engine.connect() as conn:
                    for row in conn.execute(select(Attempt).where(Attempt.job_id.in_(  # type: ignore[attr-defined]
                            select(Job.id).where(Job.state != "delivered")))).all():
                        print(row)
                raise
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    for order_id in placed:
        assert [d.status for d in market.deliveries(order_id)].count(200) == 1, order_id
    assert market.summary()["duplicates"] == 0
    with engine.connect() as conn:
        jobs = conn.execute(select(Job.state, func.count()).group_by(Job.state)).all()  # type: ignore[call-overload]
        delivered_records = conn.execute(
            select(Attempt.job_id, func.count())  # type: ignore[call-overload]
            .where(Attempt.state == "delivered").group_by(Attempt.job_id)
        ).all()
        expired = conn.execute(select(func.count()).where(Attempt.outcome == "expired")).scalar_one()  # type: ignore[arg-type]
    engine.dispose()
    assert dict(jobs) == {"delivered": ORDERS}
    assert len(delivered_records) == ORDERS and {count for _, count in delivered_records} == {1}
    assert expired >= 1  # the victim really died holding leases that another replica took over
