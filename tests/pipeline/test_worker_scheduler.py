"""One APScheduler scheduler, made by compose, runs every periodic job of a running daemon: the worker's lease
sweep, the stock sync's full pass, the retention purge and the missed-order watchdog. Started once by the app's
lifespan, shut down once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from apscheduler.schedulers.base import BaseScheduler

from delivery_daemon.stock.sync import StockSync
from tests.e2e.test_e2e_softstore import wait_for
from tests.support.stack import Stack

MakeStack = Callable[..., contextlib.AbstractAsyncContextManager[Stack]]
PERIODIC = {"worker-periodic": 60, "stock-sync": 300, "retention": 3600, "watchdog": 300}  # id: seconds (defaults)
FIRST_RUNS = {"stock-sync-first", "retention-first"}  # one-off jobs at start, gone once they have run


async def test_running_daemon_has_one_scheduler_holding_every_periodic_job(
    make_stack: MakeStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[BaseScheduler] = []
    start = BaseScheduler.start

    def recording_start(self: BaseScheduler, *args: Any, **kwargs: Any) -> None:
        started.append(self)
        start(self, *args, **kwargs)

    monkeypatch.setattr(BaseScheduler, "start", recording_start)
    async with make_stack(start_worker=True, retention={"days": 30}) as stack:
        scheduler = stack.daemon.scheduler
        assert started == [scheduler] and scheduler.running
        async with asyncio.timeout(30):  # the start-up passes run at once, then leave
            await wait_for(lambda: not FIRST_RUNS & {job.id for job in scheduler.get_jobs()})
        jobs = {job.id: job for job in scheduler.get_jobs()}
        assert {name: job.trigger.interval for name, job in jobs.items()} == {
            name: timedelta(seconds=seconds) for name, seconds in PERIODIC.items()
        }
        # A stock sync rebuilt (as a reload may do) replaces the jobs of the old one; it does not add to them.
        rebuilt = StockSync(lambda: stack.daemon.stores, stack.settings.stock_sync, stack.clock)
        rebuilt.schedule(scheduler)
        stack.daemon.schedule_periodic()
        rebuilt.schedule(scheduler)
        jobs = {job.id: job for job in scheduler.get_jobs() if job.id not in FIRST_RUNS}
        assert set(jobs) == set(PERIODIC)
        assert jobs["stock-sync"].func == rebuilt.sync_all
    assert started == [scheduler] and not scheduler.running  # shut down once, with the app


async def test_without_the_worker_nothing_is_scheduled(stack: Stack) -> None:
    """``start_worker=False`` (burst-mode tests): the scheduler is never started, and the worker drains alone."""
    assert not stack.daemon.scheduler.running and stack.daemon.scheduler.get_jobs() == []
    assert await stack.drain() == 0
