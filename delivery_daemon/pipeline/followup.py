"""The step after delivery: tell the marketplace the buyer has the goods (an adapter that is
:class:`~delivery_daemon.marketplaces.optional.AfterDelivery`, e.g. Virtual Stores marking the shop's order fulfilled).

It runs once the job is stored ``delivered`` — the buyer's delivery is never sent again for it — and its outcome is a
row of the order's history, step :data:`STEP`: ``ok``, ``retry`` (tried again later on its own, on the delivery
retry schedule) or ``dead`` (given up, or refused by the marketplace). The worker runs it right after the delivery;
:meth:`FollowUps.sweep`, from the worker's periodic run, retries what failed and runs what a crash interrupted.
Log events: ``after_delivery.done``, ``after_delivery.retry_scheduled``, ``after_delivery.dead``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import structlog

from delivery_daemon.backoff import Backoff
from delivery_daemon.clock import Clock
from delivery_daemon.errors import Dead, Retry
from delivery_daemon.marketplaces.optional import AfterDelivery
from delivery_daemon.order import Content
from delivery_daemon.pipeline.stores import Store
from delivery_daemon.storage.jobs import QueueError, Transition
from delivery_daemon.storage.models import Job, JobState
from delivery_daemon.storage.queue import JobQueue

log = structlog.get_logger("delivery_daemon.pipeline.followup")

STEP = "fulfil"


class FollowUps:
    """Runs and retries the after-delivery step of the stores whose adapter has one."""

    def __init__(
        self,
        queue: JobQueue,
        stores: Callable[[], Mapping[str, Store]],
        backoff: Backoff,
        clock: Clock,
        *,
        grace: float = 60.0,
    ) -> None:
        self.queue = queue
        self._stores = stores
        self.backoff = backoff
        self.clock = clock
        self.grace = grace
        """Seconds after a delivery during which its first try is the worker's, not the sweep's."""

    def _stores_with_step(self) -> dict[str, Store]:
        return {name: store for name, store in self._stores().items() if isinstance(store.marketplace, AfterDelivery)}

    async def run(self, store: Store, job: Job, tries: int = 0) -> None:
        """Run the step for a delivered ``job`` and record its outcome (``tries`` earlier ones). Never raises."""
        adapter = store.marketplace
        if not isinstance(adapter, AfterDelivery) or job.content is None:
            return
        bound = log.bind(store=job.store, order_id=job.order_id, job_id=job.id)
        started = self.clock.monotonic()
        try:
            detail = await adapter.after_delivery(job, Content.from_json(job.content))
            change = Transition(JobState.DELIVERED, STEP, "ok", error=detail, duration_ms=self._ms(started))
            bound.info("after_delivery.done", detail=detail)
        except Dead as exc:
            change = self._dead(exc.reason, exc.http_status, started, bound)
        except Exception as exc:  # Retry, a transport failure or a bug: tried again, never resent
            reason = exc.reason if isinstance(exc, Retry) else f"{type(exc).__name__}: {exc}"[:500]
            status = exc.http_status if isinstance(exc, Retry) else None
            delay = self.backoff.delay(tries + 1, exc.after if isinstance(exc, Retry) else None)
            if delay is None:
                change = self._dead(f"gave up after {tries + 1} tries: {reason}", status, started, bound)
            else:
                change = Transition(
                    JobState.DELIVERED, STEP, "retry", http_status=status, error=reason, duration_ms=self._ms(started)
                )
                bound.warning(
                    "after_delivery.retry_scheduled", reason=reason, http_status=status, retry_in_s=round(delay, 3)
                )
        try:
            await self.queue.note(job, change)
        except QueueError as exc:  # not recorded: the sweep finds the step unfinished and runs it again
            bound.error("worker.storage_error", step=STEP, error=str(exc))

    def _dead(
        self, reason: str, http_status: int | None, started: float, bound: structlog.typing.FilteringBoundLogger
    ) -> Transition:
        bound.error("after_delivery.dead", reason=reason, http_status=http_status)
        return Transition(
            JobState.DELIVERED, STEP, "dead", http_status=http_status, error=reason, duration_ms=self._ms(started)
        )

    def _ms(self, started: float) -> float:
        return (self.clock.monotonic() - started) * 1000

    async def sweep(self, busy: frozenset[int] = frozenset()) -> int:
        """Run the step for every delivered job that is due it (not ``busy``, i.e. in the worker's hands): failed
        tries once their backoff has passed, never-tried ones ``grace`` seconds after delivery. How many ran."""
        stores = self._stores_with_step()
        if not stores:
            return 0
        now = self.clock.now()
        ran = 0
        for item in await self.queue.follow_ups(list(stores), STEP):
            job = item.job
            if job.id in busy:
                continue
            if item.last_at is None:
                if (job.delivered_at or 0.0) + self.grace > now:
                    continue
            else:
                delay = self.backoff.delay(item.tries, None)
                if delay is not None and item.last_at + delay > now:
                    continue
            await self.run(stores[job.store], job, item.tries)
            ran += 1
        return ran
