"""The revocation step: take back a content of an order (see :mod:`delivery_daemon.storage.revocations`).

A revocation is committed with what caused it (a refund, dispute or cancellation of an order with stored content,
``orders revoke``, ``orders reissue``); the worker runs it, leased like a job, in two steps each committed on its own:

1. the product's generator's optional ``revoke`` hook (``docs/plugins.md``), called until it returns once, never
   again after its success is committed (``hook_done_at``);
2. for a content that went out, the store's channel's ``order.revoked`` event if the channel sends one (the
   ``webhook`` channel; ``notified_at``).

A step that raises Retry (or anything else but Dead) is tried again on the delivery retry schedule
(``delivery.retry_schedule``); Dead, or a schedule run out, makes the revocation ``dead``. Each step's outcome is a
row of the order's history (step ``revoke``). Log events: ``order.revoked`` (done), ``revocation.retry_scheduled``,
``revocation.dead``; metric ``delivery_daemon_revocations_total{store,outcome}`` (done, retry, dead).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import structlog

from delivery_daemon.backoff import Backoff
from delivery_daemon.channels.webhook import RevokedContent
from delivery_daemon.clock import Clock
from delivery_daemon.errors import Dead, Retry
from delivery_daemon.generators.contract import Revocable, RevocationContext, idempotency_key
from delivery_daemon.marketplaces.base import Receipt
from delivery_daemon.order import Content
from delivery_daemon.pipeline.generate import call_plugin
from delivery_daemon.pipeline.observers import Observer
from delivery_daemon.pipeline.stores import Store
from delivery_daemon.storage.jobs import QueueError, Transition
from delivery_daemon.storage.models import Job, JobState, RevocationState
from delivery_daemon.storage.queue import JobQueue
from delivery_daemon.storage.revocations import STEP, Claimed

log = structlog.get_logger("delivery_daemon.pipeline.revoke")

CLAIM_BATCH = 20


@runtime_checkable
class RevokingSink(Protocol):
    """A delivery channel that tells the seller's system about a revocation (the ``webhook`` channel)."""

    async def revoke(self, job: Job, revoked: RevokedContent) -> Receipt: ...


def key_hashes(keys: tuple[str, ...]) -> list[str]:
    """SHA-256 (hex) of each key, sorted: what a signed revocation list publishes instead of the keys."""
    return sorted(hashlib.sha256(key.encode()).hexdigest() for key in keys)


class Revoker:
    """Runs due revocations for the worker that owns it (``owner``, the worker's lease owner)."""

    def __init__(
        self,
        queue: JobQueue,
        stores: Callable[[], Mapping[str, Store]],
        backoff: Backoff,
        clock: Clock,
        owner: str,
        lease_seconds: float,
        budget: float,
        observer: Callable[[], Observer],
    ) -> None:
        """``observer`` is asked each time (the worker's may be replaced); the generator hook's time ``budget`` and
        the revocations' lease are the worker's."""
        self.queue = queue
        self._stores = stores
        self.backoff = backoff
        self.clock = clock
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.budget = budget
        self.observer = observer
        self._task: asyncio.Task[None] | None = None

    def kick(self) -> None:
        """Run due revocations in the background (the worker's periodic run), unless a run is going on."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._background(), name="revocations")

    async def _background(self) -> None:
        try:
            await self.run_due()
        except QueueError as exc:  # the next periodic run tries again
            log.error("worker.periodic_failed", error=str(exc))

    async def stop(self) -> None:
        """Cancel a background run; a revocation it held comes back when its lease ends."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _told(self, store: str, outcome: str) -> None:
        tell = getattr(self.observer(), "revocation_finished", None)  # optional for an observer
        if tell is not None:
            tell(store, outcome)

    async def run_due(self) -> int:
        """Claim and run due revocations until none is due; how many were run. Raises only QueueError."""
        ran = 0
        while True:
            claimed = await self.queue.claim_revocations(self.owner, self.lease_seconds, CLAIM_BATCH)
            if not claimed:
                return ran
            for item in claimed:
                await self.run(item)
            ran += len(claimed)

    async def run(self, item: Claimed) -> None:
        """Take one leased revocation as far as it goes now. Raises only QueueError."""
        revocation, job = item.revocation, item.job
        assert revocation.id is not None
        bound = log.bind(
            store=job.store, order_id=job.order_id, job_id=job.id, reason=revocation.reason, issue=revocation.issue
        )
        values: dict[str, Any] = {}
        step = "hook"
        try:
            content = Content.from_json(item.content) if item.content is not None else Content("", None, ())
            if revocation.key_hashes is None:
                values["key_hashes"] = json.dumps(key_hashes(content.keys))
            store = self._stores().get(job.store)
            if store is None:
                raise Retry(f"store {job.store!r} is not configured")
            if revocation.hook_done_at is None:
                detail = await self._hook(store, job, revocation.reason, revocation.sent, revocation.issue, content)
                values["hook_done_at"] = self.clock.now()
                # Committed before the next step: a hook that succeeded is never called again.
                if not await self._save(revocation.id, values, "hook_ok", detail, bound):
                    return
                values = {}
            step = "notify"
            if revocation.notified_at is None and revocation.sent and isinstance(store.sink, RevokingSink):
                revoked = RevokedContent(revocation.issue, revocation.reason, revocation.created_at, content.keys)
                await store.sink.revoke(job, revoked)
            values.update(
                notified_at=self.clock.now(),
                state=RevocationState.DONE.value,
                lease_owner=None,
                lease_until=None,
                last_error=None,
            )
            if await self._save(revocation.id, values, "done", None, bound):
                self._told(job.store, "done")
                bound.info("order.revoked", sent=revocation.sent, attempts=revocation.attempts)
        except Dead as exc:
            await self._dead(revocation.id, values, f"{step}: {exc.reason}", job, bound)
        except Exception as exc:  # Retry, a transport failure or a plugin's bug: tried again later
            reason = exc.reason if isinstance(exc, Retry) else f"{type(exc).__name__}: {exc}"[:500]
            delay = self.backoff.delay(revocation.attempts, exc.after if isinstance(exc, Retry) else None)
            if delay is None:
                await self._dead(
                    revocation.id, values, f"{step}: gave up after {revocation.attempts} tries: {reason}", job, bound
                )
                return
            values.update(
                state=RevocationState.PENDING.value,
                due_at=self.clock.now() + delay,
                lease_owner=None,
                lease_until=None,
                last_error=f"{step}: {reason}",
            )
            if await self._save(revocation.id, values, "retry", f"{step}: {reason}", bound):
                self._told(job.store, "retry")
                bound.warning("revocation.retry_scheduled", step=step, reason=reason, retry_in_s=round(delay, 3))

    async def _hook(self, store: Store, job: Job, reason: str, sent: bool, issue: int, content: Content) -> str | None:
        """Call the product's ``revoke`` hook, if it has one; a note for the history (None when it was called)."""
        product = store.product(job.product_id)
        if product is None or not isinstance(product.generator, Revocable):
            return "no revoke hook"
        context = RevocationContext(
            store=job.store,
            marketplace=job.marketplace,
            order_id=job.order_id,
            product_id=job.product_id,
            quantity=job.quantity,
            keys=content.keys,
            reason=reason,
            sent=sent,
            issue=issue,
            buyer_email=job.buyer_email,
            options=product.options,
            idempotency_key=idempotency_key(job.store, job.order_id, issue),
        )
        await call_plugin(
            product.generator.revoke,
            context,
            budget=self.budget,
            name=f"{product.generator_name}.revoke",
            threads=product.threads,
        )
        return None

    async def _dead(
        self,
        revocation_id: int,
        values: dict[str, Any],
        reason: str,
        job: Job,
        bound: structlog.typing.FilteringBoundLogger,
    ) -> None:
        values.update(state=RevocationState.DEAD.value, lease_owner=None, lease_until=None, last_error=reason)
        if await self._save(revocation_id, values, "dead", reason, bound):
            self._told(job.store, "dead")
            bound.error("revocation.dead", reason=reason)

    async def _save(
        self,
        revocation_id: int,
        values: dict[str, Any],
        outcome: str,
        error: str | None,
        bound: structlog.typing.FilteringBoundLogger,
    ) -> bool:
        """Commit a step; False (logged) when the lease was lost or the database failed — the revocation is then
        run again once its lease ends, from its last committed step."""
        change = Transition(JobState.DELIVERED, STEP, outcome, error=error)  # the state is replaced by the job's
        try:
            saved = await self.queue.save_revocation(revocation_id, self.owner, values, change)
        except QueueError as exc:
            bound.error("worker.storage_error", step=STEP, error=str(exc))
            return False
        if not saved:
            bound.warning("revocation.lease_lost")
        return saved
