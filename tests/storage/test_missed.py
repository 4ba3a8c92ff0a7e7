"""The watchdog's SQL on SQLite and PostgreSQL, with two replicas' queues on one database: the cursor only moves
forward, a missed order is raised once whoever raises it, and it stops being open when a job for it exists."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from delivery_daemon.clock import ManualClock
from delivery_daemon.order import IncomingOrder
from delivery_daemon.storage.engine import create_db_engine, create_schema
from delivery_daemon.storage.missed import WatchdogLedger, count_open, open_missed
from delivery_daemon.storage.queue import JobQueue


@pytest.fixture
def queues(db_url: str) -> Iterator[tuple[JobQueue, JobQueue]]:
    """Two queues (two replicas) on one fresh database."""
    create_schema(create_db_engine(db_url))
    clock = ManualClock()
    pair = (JobQueue(create_db_engine(db_url), clock), JobQueue(create_db_engine(db_url), clock))
    yield pair
    for queue in pair:
        queue.close()
        queue.engine.dispose()


def order(order_id: str, store: str = "soft") -> IncomingOrder:
    return IncomingOrder(store, "softstore", order_id, "p", payload={"listed": True})


async def test_cursor_moves_forward_only(queues: tuple[JobQueue, JobQueue]) -> None:
    """The first advance creates the cursor; an earlier one (another replica's older run) never moves it back."""
    first, second = (WatchdogLedger(queue) for queue in queues)
    assert await first.cursor("soft") is None
    assert await first.advance("soft", 1_000.0) == 1_000.0
    assert await second.advance("soft", 900.0) == 1_000.0
    assert await second.advance("soft", 1_500.0) == 1_500.0
    assert await first.cursor("soft") == 1_500.0 and await first.cursor("other") is None


async def test_raised_once_across_replicas_and_closed_by_a_job(queues: tuple[JobQueue, JobQueue]) -> None:
    """Two replicas raising the same order at once: one row, one True; its job (a late webhook) closes it."""
    first, second = (WatchdogLedger(queue) for queue in queues)
    raised = await asyncio.gather(*(ledger.raise_missed(order("o1"), 10.0, "why") for ledger in (first, second)))
    assert sorted(raised) == [False, True]
    await first.raise_missed(order("o2"), 20.0, "why")
    await first.raise_missed(order("o1", store="other"), 5.0, "why")
    assert await second.missed("soft", ["o1", "o2", "o3"]) == {"o1", "o2"}
    assert [m.order_id for m in open_missed(queues[0].engine, "soft")] == ["o1", "o2"]
    assert count_open(queues[0].engine) == {"soft": 2, "other": 1}
    assert (await queues[1].enqueue(order("o1"))).created
    assert await first.with_job("soft", ["o1", "o2"]) == {"o1"}
    assert [m.order_id for m in open_missed(queues[0].engine, "soft")] == ["o2"]
    assert count_open(queues[0].engine) == {"soft": 1, "other": 1}
    assert await first.with_job("soft", []) == set()
