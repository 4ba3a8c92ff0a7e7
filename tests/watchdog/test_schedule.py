"""The watchdog on the daemon's one scheduler: one job every ``watchdog.interval``, none when disabled; the stores it
watches are those whose marketplace lists orders."""

from __future__ import annotations

from delivery_daemon.watchdog.patrol import JOB_ID
from tests.support.stack import StackFactory


async def test_scheduled_every_interval_once_and_not_when_disabled(make_stack: StackFactory) -> None:
    """schedule_periodic adds the watchdog's interval job; watchdog.enabled false adds none."""
    async with make_stack(watchdog={"interval": 120}) as stack:
        daemon = stack.daemon
        assert daemon.watchdog is not None and daemon.watchdog.listed_stores() == ["shop"]
        daemon.schedule_periodic()
        jobs = [job for job in daemon.scheduler.get_jobs() if job.id == JOB_ID]
        assert len(jobs) == 1 and jobs[0].trigger.interval.total_seconds() == 120
    async with make_stack(watchdog={"enabled": False}) as stack:
        stack.daemon.schedule_periodic()
        assert all(job.id != JOB_ID for job in stack.daemon.scheduler.get_jobs())
