"""The delivery worker: takes each leased job through verify → generate → deliver.

The steps up to stored content are :class:`~delivery_daemon.pipeline.steps.Steps`, shared with synchronous
fulfilment; what is the worker's own is the leases, retries with backoff, slots (:mod:`.slots`), observers and the
delivery. A webhook's job comes straight to it: :meth:`Worker.enqueue` commits it leased to this worker, no claim
(issue #26). Other due jobs are claimed: the worker wakes the moment one is committed (:meth:`Worker.wake`), and
the APScheduler scheduler (given to :meth:`Worker.schedule`) drives the periodic work (expired leases, retries). A job
whose outcome is known gives its slot back while its last commit is pending, so the claim of its successor shares
that commit. Every outcome is one transaction through :class:`~delivery_daemon.storage.queue.JobQueue`.

:meth:`Worker.drain` is burst mode: claim and process until nothing is due, then return — for tests and tools.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import structlog

from delivery_daemon.backoff import Backoff
from delivery_daemon.clock import Clock
from delivery_daemon.config import WorkerSettings
from delivery_daemon.errors import Dead, Held, NothingDue, OutOfStock, Retry
from delivery_daemon.order import IncomingOrder
from delivery_daemon.pipeline.deliver import deliver
from delivery_daemon.pipeline.followup import FollowUps
from delivery_daemon.pipeline.observers import Observer, Observers
from delivery_daemon.pipeline.outcomes import Outcomes
from delivery_daemon.pipeline.revoke import Revoker
from delivery_daemon.pipeline.slots import Reservation, Slot, Slots, make_owner, release
from delivery_daemon.pipeline.steps import Steps
from delivery_daemon.pipeline.stores import Store
from delivery_daemon.pipeline.verify import Early
from delivery_daemon.storage.jobs import Enqueued, LeaseLost, OrderCancelled, QueueError, Transition
from delivery_daemon.storage.models import Job, JobState
from delivery_daemon.storage.queue import JobQueue

if TYPE_CHECKING:
    from apscheduler.schedulers.base import BaseScheduler

log = structlog.get_logger("delivery_daemon.pipeline.worker")

GENERATOR_BUDGET = 30.0
"""Seconds a generator may take before the call is abandoned and the order retried."""


def _retrieve(task: asyncio.Task[None]) -> None:
    """Done callback of every task the worker creates: its exception, if any, is retrieved (asyncio never prints
    "Task exception was never retrieved") and logged as an event."""
    if task.cancelled() or (exc := task.exception()) is None:
        return
    error = f"{type(exc).__name__}: {exc}"[:500]
    if isinstance(exc, QueueError):
        log.error("worker.storage_error", task=task.get_name(), error=error)
    else:
        log.error("worker.task_failed", task=task.get_name(), error=error)


class Worker:
    def __init__(
        self,
        queue: JobQueue,
        stores: Callable[[], Mapping[str, Store]],
        settings: WorkerSettings,
        backoff: Backoff,
        clock: Clock,
        *,
        owner: str | None = None,
        generator_budget: float = GENERATOR_BUDGET,
        observers: Sequence[Observer] = (),
    ) -> None:
        self.queue = queue
        self._stores = stores
        self.settings = settings
        self.backoff = backoff
        self.clock = clock
        self.owner = owner or make_owner()
        self.generator_budget = generator_budget
        self.observer: Observer = Observers(observers)
        self._outcomes = Outcomes(queue, self.owner, settings.lease_seconds)
        self.follow_ups = FollowUps(queue, stores, backoff, clock, grace=settings.lease_seconds)
        self.revoker = Revoker(
            queue, stores, backoff, clock, self.owner, settings.lease_seconds, generator_budget, lambda: self.observer
        )
        self._wake = asyncio.Event()
        # Something may be due that no claim has seen: else every slot given back claimed, and with jobs handed
        # over by the receiver found nothing (an empty transaction per order, +15 % CPU per order in the bench).
        self._due = True
        self._inflight: dict[asyncio.Task[None], int] = {}  # task -> the id of the job it works on
        self._slots = Slots(settings.concurrency, self._wake.set)
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def running(self) -> bool:
        return self._loop_task is not None and not self._loop_task.done() and not self._stopping

    @property
    def in_flight(self) -> frozenset[asyncio.Task[None]]:
        """The jobs being processed right now (a config reload waits for these before closing old adapters)."""
        return frozenset(self._inflight)

    def wake(self) -> None:
        """Look for due jobs now (called after every commit that makes a job runnable)."""
        self._due = True
        self._wake.set()

    def reserve(self, store: Store) -> Reservation | None:
        """A slot for a job of ``store`` to be committed leased to this worker; None if it is not running or full."""
        if not self.running or self._slots.free <= 0:
            return None
        return Reservation(self._slots.take(), self.owner, self.settings.lease_seconds, store, self.clock)

    async def enqueue(self, order: IncomingOrder, store: Store) -> Enqueued:
        """Commit ``order``'s job (:meth:`JobQueue.enqueue`); with a free slot a new job that is not held is committed
        leased to this worker and started here, with no claim, any other new job wakes the claim loop. A worker
        stopping meanwhile does not start it: :meth:`stop` hands it back with the other jobs it holds."""
        reservation = self.reserve(store) if order.held is None else None
        handed = False
        try:
            enqueued = await self.queue.enqueue(order, reservation.lease if reservation is not None else None)
            if reservation is not None and enqueued.job is not None and not self._stopping:
                self._start(enqueued.job, reservation.slot, reservation.early)
                handed = True
        finally:
            if reservation is not None and not handed:
                reservation.release()
        if enqueued.created and not handed:
            self.wake()
        return enqueued

    # -- lifecycle -------------------------------------------------------------------------------------------

    def schedule(self, scheduler: BaseScheduler) -> None:
        """Add :meth:`periodic` to ``scheduler``, every ``poll_interval`` seconds (again: replaces, not doubles).

        Whoever owns the scheduler shuts it down before :meth:`stop`, so that no periodic run overlaps the stop."""
        scheduler.add_job(
            self.periodic,
            "interval",
            seconds=self.settings.poll_interval,
            id="worker-periodic",
            max_instances=1,
            coalesce=True,
            replace_existing=True,
        )

    async def start(self) -> None:
        """Put expired leases back and start claiming; without :meth:`schedule` nothing runs :meth:`periodic`."""
        released = await self.queue.release_expired()
        if released:
            log.info("lease.expired", count=released)
        self._loop_task = asyncio.create_task(self._run(), name="worker")
        self._loop_task.add_done_callback(_retrieve)
        log.info("worker.started", owner=self.owner, concurrency=self.settings.concurrency)

    async def stop(self, grace: float = 10.0) -> None:
        """Stop claiming, let in-flight jobs finish within ``grace`` seconds, release the rest."""
        self._stopping = True
        self.wake()
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        if self._inflight:
            _done, pending = await asyncio.wait(set(self._inflight), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
        await self.revoker.stop()
        released = await self.queue.release_owned(self.owner)
        log.info("worker.stopped", owner=self.owner, released=released)

    async def periodic(self) -> None:
        """Renew our leases, put expired ones back, and wake the loop so that due retries are picked up."""
        try:
            if self._inflight:
                await self.queue.renew_leases(
                    self.owner, self.settings.lease_seconds, job_ids=set(self._inflight.values())
                )
            released = await self.queue.release_expired()
            await self.follow_ups.sweep(frozenset(self._inflight.values()))
            self.revoker.kick()
        except QueueError as exc:
            log.error("worker.periodic_failed", error=str(exc))
            return
        if released:
            log.info("lease.expired", count=released)
        self.wake()

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            free = self._slots.free
            if free > 0 and self._due:
                self._due = False
                wanted = min(free, self.settings.claim_batch)
                jobs: list[Job] = []
                try:
                    jobs = await self.queue.claim(self.owner, self.settings.lease_seconds, wanted)
                except QueueError as exc:
                    self._due = True  # still unseen: the next wake-up tries again
                    log.error("worker.claim_failed", error=str(exc))
                for job in jobs:
                    self._start(job, self._slots.take())
                if len(jobs) == wanted:
                    self._due = True  # there may be more due right now
                    continue
            await self._wake.wait()

    def _start(self, job: Job, slot: Slot, early: Early | None = None) -> None:
        task = asyncio.create_task(self._process(job, slot, early), name=f"job-{job.id}")
        assert job.id is not None, "a leased job has been stored"
        self._inflight[task] = job.id
        task.add_done_callback(functools.partial(self._finished, slot))

    def _finished(self, slot: Slot, task: asyncio.Task[None]) -> None:
        self._inflight.pop(task, None)
        slot.release()
        _retrieve(task)

    async def drain(self) -> int:
        """Burst mode: process due jobs and revocations until none is left; returns how many jobs were processed."""
        processed = 0
        while True:
            jobs = await self.queue.claim(self.owner, self.settings.lease_seconds, self.settings.concurrency)
            if not jobs and not await self.revoker.run_due():  # revocations too: a drain leaves nothing due
                return processed
            await asyncio.gather(*(self.process(job) for job in jobs))
            processed += len(jobs)

    # -- one job ---------------------------------------------------------------------------------------------

    async def process(self, job: Job) -> None:
        """Take one leased job as far as it goes now. Never raises except on cancellation."""
        await self._process(job, None)

    async def _process(self, job: Job, slot: Slot | None, early: Early | None = None) -> None:
        """:meth:`process`; ``slot`` is released when the job's outcome is known and only its commit is left, so
        that the next job's claim shares that commit's transaction instead of waiting for it (profile: the drain
        spent a third of each job's time waiting for the claim of its successor)."""
        bound = log.bind(store=job.store, order_id=job.order_id, job_id=job.id, attempt=job.attempts + 1)
        started = self.clock.monotonic()
        step = "verify"
        try:
            store = self._stores().get(job.store)
            if store is None:
                raise Retry(f"store {job.store!r} is not configured")
            steps = Steps(self.queue, self.owner, self.clock)
            # Not stored until the content is: one commit instead of two per order (see Steps.generate).
            verified = None if job.quantity is not None else await steps.verify(store, job, bound, early=early)
            step = "generate"
            if job.content is None:
                made = await steps.generate(store, job, bound, budget=self.generator_budget, verified=verified)
                self.observer.generated(made.product.generator_name, made.duration_ms / 1000)
            elif verified is not None:
                await steps.save_verification(job, verified)
            step = "deliver"
            bound.info("delivery.attempt", sink=store.sink.name)
            t0 = self.clock.monotonic()
            receipt = await deliver(store.sink, job)
            duration = (self.clock.monotonic() - t0) * 1000
            done = Transition(
                JobState.DELIVERED,
                "deliver",
                receipt.outcome,
                http_status=receipt.http_status,
                duration_ms=duration,
                count_attempt=True,
                error=receipt.detail,
            )
            release(slot)
            saved, settled = await self._outcomes.save(job, done, bound)
            if not saved:
                return
            self.observer.job_finished(job, done if settled is None else Outcomes.settled(job, settled, bound))
            bound.info(
                "delivery.succeeded",
                outcome=receipt.outcome,
                http_status=receipt.http_status,
                duration_ms=round(duration, 1),
                latency_ms=round((self.clock.now() - job.created_at) * 1000, 1),
            )
            await self.follow_ups.run(store, job)  # after the commit: the buyer's delivery is never sent again
        except asyncio.CancelledError:
            raise
        except LeaseLost as exc:
            bound.warning("job.lease_lost", error=str(exc))
        except OrderCancelled as exc:
            self.observer.job_finished(job, Outcomes.settled(job, exc.settled, bound))
        except Retry as exc:
            await self._retry(job, step, exc.reason, exc.after, exc.http_status, started, bound, slot)
        except Dead as exc:
            due = not isinstance(exc, NothingDue)  # nothing due is an end, not a failure: cancelled, not counted
            await self._end(
                job,
                Transition(
                    JobState.DEAD if due else JobState.CANCELLED,
                    step,
                    "dead" if due else "nothing_due",
                    http_status=exc.http_status,
                    error=exc.reason,
                    count_attempt=due,
                    duration_ms=self._ms(started),
                ),
                bound,
                slot,
            )
            event = "delivery.dead" if due else "order.nothing_due"
            (bound.warning if due else bound.info)(event, step=step, reason=exc.reason, http_status=exc.http_status)
        except Held as exc:
            await self._end(
                job,
                Transition(JobState.HELD, step, "held", error=exc.reason, duration_ms=self._ms(started)),
                bound,
                slot,
            )
            bound.warning("order.held", step=step, reason=exc.reason)
        except OutOfStock as exc:
            await self._end(
                job,
                Transition(JobState.WAITING, step, "out_of_stock", error=exc.reason, duration_ms=self._ms(started)),
                bound,
                slot,
            )
            bound.warning("stock.waiting", product_id=job.product_id, reason=exc.reason)
        except Exception as exc:  # a bug or a broken plugin must not lose the order
            reason = f"{type(exc).__name__}: {exc}"[:500]
            bound.error("job.error", step=step, error=reason)
            await self._retry(job, step, reason, None, None, started, bound, slot)

    def _ms(self, started: float) -> float:
        return (self.clock.monotonic() - started) * 1000

    async def _retry(
        self,
        job: Job,
        step: str,
        reason: str,
        after: float | None,
        http_status: int | None,
        started: float,
        bound: structlog.typing.FilteringBoundLogger,
        slot: Slot | None,
    ) -> None:
        retry = job.attempts + 1
        delay = self.backoff.delay(retry, after)
        if delay is None:
            await self._end(
                job,
                Transition(
                    JobState.DEAD,
                    step,
                    "dead",
                    http_status=http_status,
                    error=f"gave up after {retry} attempts: {reason}",
                    count_attempt=True,
                    duration_ms=self._ms(started),
                ),
                bound,
                slot,
            )
            bound.warning("delivery.dead", step=step, reason=reason, http_status=http_status, attempts=retry)
            return
        await self._end(
            job,
            Transition(
                JobState.RETRY_WAIT,
                step,
                "retry",
                http_status=http_status,
                error=reason,
                due_at=self.clock.now() + delay,
                count_attempt=True,
                duration_ms=self._ms(started),
            ),
            bound,
            slot,
        )
        bound.info(
            "delivery.retry_scheduled", step=step, reason=reason, http_status=http_status, retry_in_s=round(delay, 3)
        )

    async def _end(
        self, job: Job, change: Transition, bound: structlog.typing.FilteringBoundLogger, slot: Slot | None
    ) -> None:
        release(slot)
        try:
            saved, settled = await self._outcomes.save(job, change, bound)
            if not saved:
                return
        except LeaseLost as exc:
            bound.warning("job.lease_lost", error=str(exc))
            return
        self.observer.job_finished(job, change if settled is None else Outcomes.settled(job, settled, bound))
