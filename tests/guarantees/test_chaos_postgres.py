"""The chaos run against PostgreSQL with several replicas, and the command's checks of its database option."""

from __future__ import annotations

from pathlib import Path

import pytest

from delivery_daemon.cli import main
from delivery_daemon.order import IncomingOrder
from delivery_daemon.reference.chaos.harness import ChaosOptions
from delivery_daemon.reference.chaos.run import run_chaos
from delivery_daemon.storage.engine import create_db_engine, create_schema

pytestmark = pytest.mark.postgres


@pytest.mark.timeout(240)
async def test_chaos_run_on_postgresql_with_three_replicas(tmp_path: Path, pg_url: str) -> None:
    """200 orders over 3 replicas on one PostgreSQL database, 2 SIGKILLs under faults: every promise holds."""
    lines: list[str] = []
    options = ChaosOptions(orders=200, kills=2, rate=80, workdir=tmp_path, database_url=pg_url, replicas=3)
    verdict = await run_chaos(options, say=lines.append)
    assert verdict.violations == [], "\n".join(lines)
    assert verdict.kills == 2 and verdict.faults > 20 and verdict.resent > 0
    assert verdict.delivered == verdict.orders - verdict.unpaid - verdict.never_sent > 170
    assert verdict.integrity.startswith("ok (amcheck: ") and verdict.unfinished == 0 and verdict.leaks == 0
    assert "3 replica(s) on postgresql+psycopg://" in lines[0]


def test_chaos_refuses_a_database_that_holds_orders(pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A run's verdict counts every job in the database, so a database with orders is refused with exit 2."""
    import asyncio

    from delivery_daemon.clock import SystemClock
    from delivery_daemon.storage.queue import JobQueue

    engine = create_db_engine(pg_url)
    create_schema(engine)
    queue = JobQueue(engine, SystemClock())
    asyncio.run(
        queue.enqueue(IncomingOrder(store="s", marketplace="softstore", order_id="o1", product_id="p", payload={}))
    )
    queue.close()
    engine.dispose()
    assert main(["chaos", "--database-url", pg_url, "--replicas", "3"]) == 2
    err = capsys.readouterr().err
    assert "--database-url" in err and "already holds orders" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--replicas", "3"], "--replicas"),
        (["--replicas", "0"], "--replicas"),
        (["--database-url", "sqlite:///x.db"], "--database-url"),
        (["--marketplace", "stripe", "--database-url", "postgresql://u@127.0.0.1:1/d"], "--database-url"),
    ],
)
def test_chaos_rejects_unusable_database_options(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Replicas without PostgreSQL, zero replicas, a non-PostgreSQL URL, or PostgreSQL with a webhook-only
    marketplace's run: exit 2 naming the option."""
    assert main(["chaos", *argv]) == 2
    assert capsys.readouterr().err.startswith(f"delivery-daemon: error: {named}: ")
