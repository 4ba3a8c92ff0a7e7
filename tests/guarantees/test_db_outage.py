"""A database outage in the middle of deliveries: the worker survives it, saves each outcome once the database is
back, and keeps renewing only the leases of the jobs it is really working on (issue #20, item 7)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from delivery_daemon.order import IncomingOrder
from delivery_daemon.storage.jobs import QueueError
from delivery_daemon.storage.models import JobState
from tests.e2e.test_e2e_softstore import wait_for
from tests.support.pg import postgres_server
from tests.support.stack import PRODUCT, STORE, Stack

MakeStack = Callable[..., contextlib.AbstractAsyncContextManager[Stack]]

SLOW = 2.0
"""Seconds the marketplace holds back each delivery answer: the database goes away while they are held."""
LEASE = 60.0
BOUND = 10.0
"""Seconds from the database's return within which every order must be final: well below ``LEASE``."""


@contextlib.contextmanager
def loop_exceptions() -> Iterator[list[str]]:
    """The messages of every exception the running loop's handler is asked to report (e.g. "Task exception was
    never retrieved"), collected until the block ends (garbage collected first, so that dead tasks report)."""
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    reported: list[str] = []

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        reported.append(str(context.get("message")))
        loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
    try:
        yield reported
        gc.collect()
    finally:
        loop.set_exception_handler(previous)


def events(stack: Stack, name: str) -> list[dict[str, Any]]:
    return [event for line in stack.logs.getvalue().splitlines() if (event := json.loads(line))["event"] == name]


@pytest.mark.postgres
async def test_postgres_restart_mid_delivery_every_order_final_soon_after(make_stack: MakeStack) -> None:
    """PostgreSQL restarted while deliveries are in flight: every order is delivered within seconds of its return."""
    orders = 8
    with postgres_server() as server, loop_exceptions() as reported:
        url = server.create_database()
        async with make_stack(
            start_worker=True, database={"url": url}, worker={"lease_seconds": LEASE, "poll_interval": 1}
        ) as stack:
            stack.market.faults.slow_next_deliveries(orders, SLOW)
            placed = await asyncio.gather(*(stack.market.place_order(PRODUCT) for _ in range(orders)))
            assert all(p.webhook_status == 200 for p in placed)
            ids = [p.id_order for p in placed]
            async with asyncio.timeout(60):  # every delivery reached the marketplace; the answers are held back
                await wait_for(lambda: all(stack.market.accepted(i) is not None for i in ids))
            server.stop()  # blocks the loop: no answer is read before the database is gone
            await asyncio.sleep(SLOW + 1.0)  # the outage: every held answer comes back while the database is down
            server.start()
            back = time.monotonic()
            states: dict[str, str] = {}
            while time.monotonic() - back < BOUND:
                with contextlib.suppress(QueueError):  # the first reads after the restart may meet a dead connection
                    states = {i: (await stack.job(i)).state for i in ids}
                if set(states.values()) == {JobState.DELIVERED.value}:
                    break
                await asyncio.sleep(0.1)
            took = time.monotonic() - back
            assert set(states.values()) == {JobState.DELIVERED.value}, (
                f"orders not final {BOUND:.0f} s after PostgreSQL came back: {sorted(states.values())}"
            )
            assert took < BOUND
            assert all(len([d for d in stack.market.deliveries(i) if d.status == 200]) == 1 for i in ids)
            hit = {event["order_id"] for event in events(stack, "worker.storage_error")}
            assert hit == set(ids), "the outage must have failed the save of every delivery's outcome"
    assert not [message for message in reported if "never retrieved" in message], reported


async def test_lease_renewal_touches_only_the_jobs_being_worked_on(make_stack: MakeStack) -> None:
    """The periodic renewal extends the lease of the job being delivered, not another job the same owner holds."""
    async with make_stack(start_worker=True) as stack:
        worker, queue, clock = stack.daemon.worker, stack.daemon.queue, stack.clock
        lease = stack.settings.worker.lease_seconds
        stack.market.faults.slow_next_deliveries(1, 5.0)
        busy = await stack.market.place_order(PRODUCT)
        async with asyncio.timeout(30):  # being delivered: the answer is held back
            await wait_for(lambda: stack.market.accepted(busy.id_order) is not None)
        # Another job leased to this worker's owner that no task works on (e.g. one whose task died).
        await queue.enqueue(
            IncomingOrder(
                store=STORE,
                marketplace="softstore",
                order_id="held",
                product_id=PRODUCT,
                payload={"delivery_url": "https://m.example/d/t", "token": "t"},
            )
        )
        held = await queue.claim_order(STORE, "held", worker.owner, lease)
        assert held is not None and held.lease_until == clock.now() + lease
        claimed_until = held.lease_until
        clock.advance(10)
        await worker.periodic()
        busy_job, held_job = await stack.job(busy.id_order), await stack.job("held")
        assert (busy_job.state, busy_job.lease_until) == (JobState.RUNNING.value, clock.now() + lease)
        assert (held_job.lease_owner, held_job.lease_until) == (worker.owner, claimed_until)


async def test_outcome_save_that_keeps_failing_gives_up_and_the_lapsed_lease_brings_the_order_back(
    make_stack: MakeStack, tmp_path: Path
) -> None:
    """A save refused for longer than the lease (SQLite locked) is given up; the lease lapses, the retry sees 409."""
    async with make_stack(start_worker=True, database={"busy_timeout_ms": 50}, worker={"lease_seconds": 0.5}) as stack:
        stack.market.faults.slow_next_deliveries(1, 1.0)
        placed = await stack.market.place_order(PRODUCT)
        async with asyncio.timeout(30):
            await wait_for(lambda: stack.market.accepted(placed.id_order) is not None)
        with contextlib.closing(sqlite3.connect(tmp_path / "daemon.db", isolation_level=None)) as lock:
            lock.execute("BEGIN EXCLUSIVE")  # every write of the daemon now fails with "database is locked"
            async with asyncio.timeout(30):
                await wait_for(lambda: bool(events(stack, "worker.storage_gave_up")))
            lock.execute("ROLLBACK")
        job = await stack.job(placed.id_order)
        assert (job.state, job.lease_owner) == (JobState.RUNNING.value, stack.daemon.worker.owner)
        stack.clock.advance(1)  # the lease ran out: not renewed, since no task works on the job any more
        await stack.daemon.worker.periodic()
        async with asyncio.timeout(30):
            await wait_for(lambda: any(e["outcome"] == "already" for e in events(stack, "delivery.succeeded")))
        job = await stack.job(placed.id_order)
        assert job.state == JobState.DELIVERED.value
        history = [(a.step, a.outcome) for a in await stack.daemon.queue.history(job.id)]
        assert ("lease", "expired") in history and history[-1] == ("deliver", "already")
        assert [d.status for d in stack.market.deliveries(placed.id_order)] == [200, 409]
