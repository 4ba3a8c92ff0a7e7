"""Saving a job's outcome: through a database outage, and settling a refund or dispute that arrived meanwhile.

The worker's last write for an attempt must not be lost when the database goes away for a moment (PostgreSQL
restarting, SQLite locked or full): :meth:`Outcomes.save` tries again with a capped backoff while the job stays in
flight, so its lease is renewed, and gives up only after ``lease_seconds``. :meth:`Outcomes.settled` logs how a
refund that arrived during the lease settled the job (docs/guarantees.md, "Refunds and disputes").
"""

from __future__ import annotations

import asyncio

import structlog

from delivery_daemon.storage.jobs import QueueError, Settled, Transition
from delivery_daemon.storage.models import Job, JobState
from delivery_daemon.storage.queue import JobQueue

SAVE_RETRY_FIRST = 0.1
SAVE_RETRY_CAP = 1.0
"""Backoff (seconds, doubling up to the cap) between tries of an outcome's save while the database fails: a job's
outcome is saved at most about a second after the database is back."""


class Outcomes:
    """Records the worker's outcomes for ``owner`` (its lease owner id)."""

    def __init__(self, queue: JobQueue, owner: str, lease_seconds: float) -> None:
        self.queue = queue
        self.owner = owner
        self.lease_seconds = lease_seconds

    async def save(
        self, job: Job, change: Transition, bound: structlog.typing.FilteringBoundLogger
    ) -> tuple[bool, Settled | None]:
        """Record an attempt's outcome (:meth:`JobQueue.transition`), trying again while the database fails (e.g.
        PostgreSQL restarting, SQLite locked or full): every :data:`SAVE_RETRY_FIRST` seconds, doubling up to
        :data:`SAVE_RETRY_CAP`, for up to ``lease_seconds`` in all. The job stays in flight meanwhile, so its lease
        is renewed. Returns whether it was saved, and how a refund or dispute that arrived meanwhile settled the job
        (:meth:`JobQueue.transition`). Not saved if it gave up: the job is then no longer renewed, its lease runs out
        and the job is attempted again (a delivery the marketplace already has is then answered 409 and recorded as
        delivered). :class:`LeaseLost` propagates."""
        delay, waited = SAVE_RETRY_FIRST, 0.0
        while True:
            try:
                settled = await self.queue.transition(job, self.owner, change)
            except QueueError as exc:
                if waited >= self.lease_seconds:
                    bound.error(
                        "worker.storage_gave_up",
                        step=change.step,
                        state=change.state.value,
                        error=str(exc),
                        waited_s=round(waited, 1),
                    )
                    return False, None
                if not waited:
                    bound.warning(
                        "worker.storage_error",
                        step=change.step,
                        state=change.state.value,
                        error=str(exc),
                        retry_in_s=delay,
                    )
                await asyncio.sleep(delay)
                waited += delay
                delay = min(delay * 2, SAVE_RETRY_CAP)
                continue
            if waited:
                bound.info(
                    "worker.storage_recovered", step=change.step, state=change.state.value, waited_s=round(waited, 1)
                )
            return True, settled

    @staticmethod
    def settled(job: Job, settled: Settled, bound: structlog.typing.FilteringBoundLogger) -> Transition:
        """Log how a refund or dispute that arrived during the job's lease settled it (a warning when the keys went
        out: the seller must act); the outcome to tell the observers."""
        flagged = settled.change.state is JobState.DELIVERED
        job.flag = settled.kind if flagged else None
        (bound.warning if flagged else bound.info)(
            f"order.{settled.kind}", outcome="flagged" if flagged else "cancelled", flagged=flagged
        )
        return settled.change
