"""``delivery-daemon serve`` as a real process: SIGTERM during a delivery, SIGHUP with a good and a bad config,
JSON logs from ``--log-format json``, the start-up heap frozen once serving. The reference marketplace runs in the
test's event loop on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable, MutableMapping
from pathlib import Path
from typing import Any

import pytest

from delivery_daemon.http.serving import serve
from delivery_daemon.reference.softstore import SoftStoreMarketplace
from tests.support.stack import accepted_text

WAIT = 60.0  # generous: other test runs share the CPUs


class DaemonProcess:
    """A running ``delivery-daemon serve`` whose JSON log lines are collected as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.url = ""  # the webhook server's base URL, set by start_daemon once it is listening
        self.events: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._new = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            text = line.decode().strip()
            self.raw.append(text)
            if text:
                self.events.append(json.loads(text))  # every line must be JSON with --log-format json
            self._new.set()

    async def wait_for(self, event: str, count: int = 1) -> dict[str, Any]:
        async with asyncio.timeout(WAIT):
            while True:
                found = [e for e in self.events if e["event"] == event]
                if len(found) >= count:
                    return found[count - 1]
                if self._reader.done():
                    raise AssertionError(f"daemon exited before {event}: {self.raw[-5:]}")
                self._new.clear()
                await self._new.wait()

    async def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(WAIT):
            code = await self.proc.wait()
            await self._reader
        return code


async def start_daemon(config: Path) -> DaemonProcess:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "delivery_daemon",
        "serve",
        "--config",
        str(config),
        "--log-format",
        "json",
        "--log-level",
        "info",
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "DD_TEST_API_KEY": API_KEY},
    )
    daemon = DaemonProcess(proc)
    started = await daemon.wait_for("daemon.started")
    daemon.url = started["webhooks"].removesuffix("/webhooks/<store>")
    return daemon


API_KEY = secrets.token_hex(20)


def write_config(
    path: Path,
    api_base: str,
    *,
    db: Path,
    template: str = "A {keys_lines}",
    grace: float = 20,
    generator: str = "pattern",
) -> Path:
    path.write_text(f"""
database: {{url: "sqlite:///{db}"}}
server: {{host: 127.0.0.1, port: 0}}
worker: {{poll_interval: 0.2, shutdown_grace: {grace}}}
delivery: {{retry_schedule: [0.2, 0.5, 1], timeout: 30, jitter: false}}
stores:
  - name: shop
    marketplace: softstore
    api_url: {api_base}
    api_key: ${{DD_TEST_API_KEY}}
    products:
      prod-1: {{generator: {generator}, template: "{template}"}}
""")
    return path


async def reload_with(tmp_path: Path, extra_yaml: str) -> tuple[Any, MutableMapping[str, Any]]:
    """A Runner on a written config, reloaded after ``extra_yaml`` is appended: (the runner, the
    ``config.reloaded`` event). Needs ``DD_TEST_API_KEY`` set. The daemon is closed before returning."""
    import structlog.testing

    from delivery_daemon.compose import default_marketplaces
    from delivery_daemon.config import load_settings
    from delivery_daemon.daemon import Runner
    from delivery_daemon.generators.discovery import discover

    config = write_config(tmp_path / "c.yaml", "http://127.0.0.1:9/api/v1", db=tmp_path / "d.db")
    runner = Runner(config, load_settings(config), marketplaces=default_marketplaces(), plugins=dict(discover()))
    with config.open("a") as extra:
        extra.write(extra_yaml)
    try:
        with structlog.testing.capture_logs() as logs:
            assert await runner.reload()
    finally:
        await runner.daemon.aclose()
    [reloaded] = [event for event in logs if event["event"] == "config.reloaded"]
    return runner, reloaded


@pytest.fixture
async def market() -> AsyncIterator[SoftStoreMarketplace]:
    market = SoftStoreMarketplace(api_key=API_KEY)
    market.add_product("prod-1", count=1000)
    async with serve(market.app) as server:
        market.bind(server.url)
        yield market


def job_state(db: Path, order_id: str) -> tuple[str, list[str]]:
    with sqlite3.connect(db) as conn:
        job_id, state = conn.execute("SELECT id, state FROM jobs WHERE order_id = ?", (order_id,)).fetchone()
        outcomes = [
            row[0] for row in conn.execute("SELECT outcome FROM attempts WHERE job_id = ? ORDER BY id", (job_id,))
        ]
    return state, outcomes


async def until(condition: Callable[[], bool]) -> None:
    """Poll state owned by another process (the daemon's database, the marketplace's records)."""
    async with asyncio.timeout(WAIT):
        while True:
            if condition():
                return
            await asyncio.sleep(0.02)


async def wait_delivery_posted(market: SoftStoreMarketplace, order_id: str) -> None:
    await until(lambda: bool(market.deliveries(order_id)))


async def test_serve_freezes_its_start_up_heap(market: SoftStoreMarketplace, tmp_path: Path) -> None:
    """Once serving, the start-up heap (imports, app, config) is frozen out of the collector's full passes."""
    daemon = await start_daemon(write_config(tmp_path / "c.yaml", market.api_base, db=tmp_path / "d.db"))
    try:
        started = await daemon.wait_for("daemon.started")
        assert started["heap_frozen"] > 10_000  # SQLAlchemy, Starlette, pydantic models: ~10^5 objects
    finally:
        assert await daemon.stop() == 0


async def test_sigterm_lets_inflight_delivery_finish(market: SoftStoreMarketplace, tmp_path: Path) -> None:
    """SIGTERM while a delivery is in flight: it completes within the grace period, the process exits 0."""
    db = tmp_path / "d.db"
    daemon = await start_daemon(write_config(tmp_path / "c.yaml", market.api_base, db=db, grace=30))
    market.seller_url = f"{daemon.url}/webhooks/shop"
    market.faults.slow_next_deliveries(1, 1.5)
    order = await market.place_order("prod-1", 1)
    await wait_delivery_posted(market, order.id_order)
    assert await daemon.stop() == 0
    state, outcomes = job_state(db, order.id_order)
    assert state == "delivered" and outcomes[-1] == "delivered"
    stopped = next(e for e in daemon.events if e["event"] == "worker.stopped")
    assert stopped["released"] == 0
    assert any(e["event"] == "daemon.stopping" and e["signal"] == "SIGTERM" for e in daemon.events)


async def test_sigterm_past_grace_releases_job_for_next_start(market: SoftStoreMarketplace, tmp_path: Path) -> None:
    """SIGTERM with a delivery slower than the grace period: the job is released, and the next start finishes it."""
    db = tmp_path / "d.db"
    config = write_config(tmp_path / "c.yaml", market.api_base, db=db, grace=0.3)
    daemon = await start_daemon(config)
    market.seller_url = f"{daemon.url}/webhooks/shop"
    market.faults.slow_next_deliveries(1, 8)
    order = await market.place_order("prod-1", 1)
    await wait_delivery_posted(market, order.id_order)
    assert await daemon.stop() == 0
    state, outcomes = job_state(db, order.id_order)
    assert state == "queued" and outcomes[-1] == "released"
    again = await start_daemon(config)
    try:
        await until(lambda: job_state(db, order.id_order)[0] == "delivered")
    finally:
        assert await again.stop() == 0
    # The marketplace got the content once (its first POST was processed); the second was answered 409.
    assert [d.status for d in market.deliveries(order.id_order)][-1] == 409
    assert market.accepted(order.id_order) is not None


async def test_sighup_reloads_good_config_and_refuses_bad(market: SoftStoreMarketplace, tmp_path: Path) -> None:
    """SIGHUP applies a new template without dropping webhooks; a bad file is refused and the old config runs."""
    db = tmp_path / "d.db"
    config = write_config(tmp_path / "c.yaml", market.api_base, db=db, template="A {keys_lines}")
    daemon = await start_daemon(config)
    market.seller_url = f"{daemon.url}/webhooks/shop"
    try:
        write_config(config, market.api_base, db=db, template="B {keys_lines}")
        daemon.proc.send_signal(signal.SIGHUP)
        during = await asyncio.gather(*(market.place_order("prod-1", 1) for _ in range(5)))
        await daemon.wait_for("config.reloaded")
        after = await market.place_order("prod-1", 1)
        write_config(config, market.api_base, db=db, template="C {keys_lines}", generator="no-such-generator")
        daemon.proc.send_signal(signal.SIGHUP)
        failed = await daemon.wait_for("config.reload_failed")
        assert "no-such-generator" in failed["error"] and API_KEY not in json.dumps(daemon.events)
        late = await market.place_order("prod-1", 1)
        await until(lambda: all(market.accepted(o.id_order) is not None for o in (*during, after, late)))
    finally:
        assert await daemon.stop() == 0
    assert all(o.webhook_status == 200 for o in (*during, after, late))
    assert accepted_text(market, after.id_order).startswith("B ")
    assert accepted_text(market, late.id_order).startswith("B ")
    assert {accepted_text(market, o.id_order)[0] for o in during} <= {"A", "B"}
