"""``db backup`` (online, while orders arrive) and retention (purge old data, keep the audit row)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import stat
from pathlib import Path

import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from delivery_daemon.cli import main
from delivery_daemon.clock import ManualClock
from delivery_daemon.storage.engine import create_db_engine
from delivery_daemon.storage.queue import JobQueue
from delivery_daemon.storage.retention import RetentionService, purge
from tests.support.stack import PRODUCT, STORE, Stack

DAY = 86400.0


async def test_backup_while_orders_arrive(stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`db backup FILE` copies the live database consistently while webhooks are being committed."""
    first = [await stack.market.place_order(PRODUCT, 1) for _ in range(3)]
    await stack.drain()
    target = tmp_path / "backup.db"
    url = stack.settings.database.url
    arriving = asyncio.gather(*(stack.market.place_order(PRODUCT, 1) for _ in range(20)))
    code = await asyncio.to_thread(main, ["db", "backup", str(target), "--database", url])
    more = await arriving
    assert code == 0 and "backup written" in capsys.readouterr().out
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert not target.with_name("backup.db.partial").exists()
    with sqlite3.connect(target) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        count = conn.execute("SELECT count(*) FROM jobs").fetchone()[0]
    assert 3 <= count <= 3 + len(more)
    restored = JobQueue(create_db_engine(f"sqlite:///{target}"), ManualClock())
    try:
        job = await restored.find(STORE, first[0].id_order)
        assert job is not None and job.state == "delivered" and job.content is not None
    finally:
        restored.close()
    assert main(["db", "backup", str(target), "--database", url]) == 1
    assert "--force" in capsys.readouterr().err
    assert main(["db", "backup", str(target), "--database", url, "--force"]) == 0


async def test_purge_keeps_audit_row_only(stack: Stack) -> None:
    """After retention.days, finished orders lose payload, content and e-mail; the job row and history stay."""
    delivered = await stack.market.place_order(PRODUCT, 1)
    await stack.drain()
    stack.clock.advance(20 * DAY)
    pending = await stack.market.place_order(PRODUCT, 1)
    engine = stack.daemon.engine
    assert purge(engine, stack.clock, days=30) == 0
    stack.clock.advance(11 * DAY)
    assert purge(engine, stack.clock, days=30) == 1
    job = await stack.job(delivered.id_order)
    assert (job.payload, job.content, job.buyer_email) == ("{}", None, None)
    assert (job.state, job.quantity, job.order_id) == ("delivered", 1, delivered.id_order)
    history = await stack.daemon.queue.history(job.id)
    assert [a.outcome for a in history][-2:] == ["delivered", "purged"]
    untouched = await stack.job(pending.id_order)
    assert untouched.state == "queued" and json.loads(untouched.payload)["token"]
    assert purge(engine, stack.clock, days=30) == 0


async def test_retention_service_runs_on_schedule(stack: Stack) -> None:
    """The APScheduler retention job purges soon after start, without waiting a whole interval."""
    order = await stack.market.place_order(PRODUCT, 1)
    await stack.drain()
    stack.clock.advance(8 * DAY)
    service = RetentionService(stack.daemon.engine, stack.clock, days=7, interval=3600)
    scheduler = AsyncIOScheduler()  # any scheduler will do: the daemon's own is tests/test_worker_scheduler.py's
    service.schedule(scheduler)
    scheduler.start()
    try:
        async with asyncio.timeout(30):
            while True:
                if (await stack.job(order.id_order)).content is None:
                    break
                await asyncio.sleep(0.05)
    finally:
        scheduler.shutdown(wait=False)


async def test_purge_and_redeliver_cli(stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`db purge` takes retention.days from the config or --days; a purged order cannot be redelivered."""
    order = await stack.market.place_order(PRODUCT, 1)
    await stack.drain()
    url = stack.settings.database.url
    config = tmp_path / "c.yaml"
    config.write_text(f"database: {{url: '{url}'}}\nretention: {{days: 30}}\n")
    assert main(["db", "purge", "--config", str(config)]) == 0
    assert "nothing to purge" in capsys.readouterr().out
    assert main(["db", "purge", "--database", url]) == 2
    assert "retention.days" in capsys.readouterr().err
    stack.clock.advance(31 * DAY)
    purge(stack.daemon.engine, stack.clock, days=30)
    assert main(["orders", "redeliver", order.id_order, "--database", url]) == 1
    assert "purged" in capsys.readouterr().err


async def test_replicas_purging_at_once_purge_each_order_once(db_url: str) -> None:
    """Every replica runs the retention job: three concurrent purges of 300 old orders (in batches of 40) purge
    each order exactly once, with one ``purged`` record each, and neither deadlock nor fail."""
    from sqlalchemy import func, select, text

    from delivery_daemon.storage.engine import create_schema
    from delivery_daemon.storage.jobs import ATTEMPTS

    engine = create_db_engine(db_url)
    create_schema(engine)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO jobs (store, order_id, marketplace, product_id, state, payload, content, attempts,"
                " received, due_at, created_at, updated_at) VALUES (:store, :order_id, 'softstore', 'p', 'delivered',"
                " '{\"token\": \"t\"}', 'KEY', 1, 1, 0, 0, 0)"
            ),
            [{"store": "shop", "order_id": f"o{n}"} for n in range(300)],
        )
    clock = ManualClock()
    clock.advance(40 * DAY)
    replicas = [create_db_engine(db_url) for _ in range(3)]
    try:
        purged = await asyncio.gather(*(asyncio.to_thread(purge, replica, clock, 30, batch=40) for replica in replicas))
    finally:
        for replica in replicas:
            replica.dispose()
    with engine.connect() as conn:
        records = conn.execute(
            select(ATTEMPTS.c.job_id, func.count()).where(ATTEMPTS.c.outcome == "purged").group_by(ATTEMPTS.c.job_id)
        ).all()
    engine.dispose()
    assert sum(purged) == 300
    assert len(records) == 300 and {count for _job, count in records} == {1}
