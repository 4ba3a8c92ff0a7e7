"""The daemon as a real process: SIGKILL mid-delivery or with a queued job, restart, and nothing is lost or doubled.

The reference marketplace runs in the test's event loop; the daemon is ``python -m delivery_daemon serve`` on a
free loopback port with its own SQLite file. The marketplace's record decides "delivered exactly once": one 200,
and any later attempt sees 409.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from delivery_daemon.config import SecuritySettings
from delivery_daemon.http.serving import serve
from delivery_daemon.reference.softstore import SoftStoreMarketplace
from delivery_daemon.storage.cipher import load_cipher
from tests.support.multistore import free_port

PRODUCT = "prod-1"
API_KEY = "crash-test-api-key-0123456789"
SLOW = 5.0  # seconds the marketplace holds its answer to the first delivery (it has already recorded it)


class Daemon:
    """Start/kill ``delivery-daemon serve`` processes sharing one config and database."""

    def __init__(self, tmp_path: Path, api_base: str, concurrency: int) -> None:
        self.port = free_port()
        self.db = tmp_path / "daemon.db"
        self.log = tmp_path / "daemon.log"
        self.config = tmp_path / "daemon.yaml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "database": {"url": f"sqlite:///{self.db}"},
                    "server": {"host": "127.0.0.1", "port": self.port},
                    "worker": {"lease_seconds": 1, "poll_interval": 0.2, "concurrency": concurrency},
                    "delivery": {"timeout": 10, "retry_schedule": [0.5, 0.5, 0.5], "jitter": False},
                    "logging": {"format": "json"},
                    "stores": [
                        {
                            "name": "shop",
                            "marketplace": "softstore",
                            "api_url": api_base,
                            "api_key": API_KEY,
                            "products": {PRODUCT: {"generator": "pattern"}},
                        }
                    ],
                }
            )
        )
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def spawn(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "delivery_daemon", "serve", "--config", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    async def start(self) -> None:
        """Start the process and return once ``/readyz`` says the database and worker are up."""
        self.process = self.spawn()
        async with httpx.AsyncClient() as client, asyncio.timeout(60):
            while True:
                assert self.process.poll() is None, self.log.read_text()
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get(f"{self.url}/readyz")).status_code == 200:
                        return
                await asyncio.sleep(0.05)

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(30)
        self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
            self.process = None

    def job(self, order_id: str) -> dict[str, Any]:
        with contextlib.closing(sqlite3.connect(self.db)) as conn:
            conn.row_factory = sqlite3.Row
            row = conn.execute("SELECT * FROM jobs WHERE order_id = ?", (order_id,)).fetchone()
        assert row is not None, f"no job for {order_id}"
        return dict(row)


@pytest.fixture
async def market() -> AsyncIterator[SoftStoreMarketplace]:
    reference = SoftStoreMarketplace(api_key=API_KEY)
    reference.add_product(PRODUCT, count=1000)
    async with serve(reference.app) as running:
        reference.bind(running.url)
        yield reference


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    made: list[Daemon] = []

    def make(market: SoftStoreMarketplace, concurrency: int = 4) -> Daemon:
        daemon = Daemon(tmp_path, market.api_base, concurrency)
        market.seller_url = f"{daemon.url}/webhooks/shop"
        made.append(daemon)
        return daemon

    yield make
    for daemon in made:
        daemon.stop()


async def until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(60):  # generous: other test runs share the machine
        while not predicate():  # noqa: ASYNC110  (the state lives in another process; nothing to await on)
            await asyncio.sleep(0.05)


def assert_delivered_once(market: SoftStoreMarketplace, order_id: str) -> None:
    deliveries = market.deliveries(order_id)
    statuses = [d.status for d in deliveries if d.status]
    assert statuses.count(200) == 1, statuses
    assert set(statuses) <= {200, 409}, statuses
    assert len({d.body for d in deliveries}) == 1, "a retry sent different content"
    assert market.orders[order_id].delivered


async def test_sigkill_mid_delivery_then_restart_delivers_once(
    market: SoftStoreMarketplace,
    daemons: Callable[..., Daemon],
) -> None:
    """Killed while the marketplace holds its answer, the restarted daemon finishes the job with no second 200."""
    daemon = daemons(market)
    await daemon.start()
    market.faults.slow_next_deliveries(1, SLOW)
    placed = await market.place_order(PRODUCT, 2)
    assert placed.webhook_status == 200
    await until(lambda: any(d.status == 200 for d in market.deliveries(placed.id_order)))
    daemon.kill()  # the 200 is recorded by the marketplace but the daemon never read it
    assert daemon.job(placed.id_order)["state"] != "delivered"

    await daemon.start()
    await until(lambda: daemon.job(placed.id_order)["state"] == "delivered")
    assert_delivered_once(market, placed.id_order)
    job = daemon.job(placed.id_order)
    cipher = load_cipher(SecuritySettings(), daemon.db)  # content is sealed at rest with the generated key file
    assert cipher is not None
    assert len(json.loads(cipher.open(job["content"], f"{job['store']}/{job['order_id']}/content"))["keys"]) == 2


async def test_sigkill_with_queued_job_is_picked_up_after_restart(
    market: SoftStoreMarketplace,
    daemons: Callable[..., Daemon],
) -> None:
    """A job acknowledged (committed) but not yet delivered when the daemon is killed is delivered after restart."""
    daemon = daemons(market, concurrency=1)  # one job in flight, so the second stays queued
    await daemon.start()
    market.faults.slow_next_deliveries(1, SLOW)
    busy = await market.place_order(PRODUCT)
    await until(lambda: any(d.status == 200 for d in market.deliveries(busy.id_order)))
    waiting = await market.place_order(PRODUCT)
    assert waiting.webhook_status == 200  # answered only after the commit
    daemon.kill()
    assert daemon.job(waiting.id_order)["state"] == "queued"
    assert market.deliveries(waiting.id_order) == []

    await daemon.start()
    await until(lambda: all(daemon.job(o)["state"] == "delivered" for o in (busy.id_order, waiting.id_order)))
    assert_delivered_once(market, busy.id_order)
    assert_delivered_once(market, waiting.id_order)
