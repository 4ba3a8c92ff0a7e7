"""Synchronous fulfilment: the marketplace waits on its request for the goods and will not ask again.

Used for a :class:`~delivery_daemon.marketplaces.base.FulfilNow` webhook result (Sellix dynamic products). The order is
committed as a job like any other, leased to the receiver, verified and generated within the request's budget, and
its content stored *before* the answer goes out; the job is then ``delivered`` with outcome ``answered``. The same
order asked again is answered the stored keys, never new ones.

If the goods cannot be produced in time the job is left ``dead`` with the reason, ``fulfil.failed`` is logged (so
the seller can act, e.g. ``retry`` it to deliver through the store's channel), and the caller answers non-2xx.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass

import anyio
import structlog

from delivery_daemon.errors import Dead, DeliveryDaemonError, OutOfStock, Retry
from delivery_daemon.marketplaces.base import FulfilNow
from delivery_daemon.order import Content
from delivery_daemon.pipeline.steps import Steps
from delivery_daemon.pipeline.stores import Store
from delivery_daemon.storage.jobs import LeaseLost, OrderCancelled, Transition
from delivery_daemon.storage.models import Job, JobState
from delivery_daemon.storage.queue import JobQueue

log = structlog.get_logger("delivery_daemon.pipeline.fulfil")

CLAIMABLE = (JobState.QUEUED.value, JobState.RETRY_WAIT.value, JobState.WAITING.value, JobState.DEAD.value)
"""States a synchronous request may take a job from: a dead job is tried again when the marketplace asks again."""


@dataclass(frozen=True)
class Fulfilment:
    """The answer to a synchronous request: the keys, or why there are none (``status`` is the HTTP status)."""

    status: int
    keys: tuple[str, ...] = ()
    reason: str | None = None
    repeated: bool = False


def _stored_keys(job: Job | None) -> tuple[str, ...] | None:
    if job is None or job.content is None:
        return None
    return Content.from_json(job.content).keys


async def fulfil_now(
    queue: JobQueue, store: Store, request: FulfilNow, *, slots: asyncio.Semaphore | None = None
) -> Fulfilment:
    """Produce (or repeat) the keys for ``request.order`` within ``request.budget`` seconds.

    ``slots`` bounds the generator calls made this way at once (a flood of synchronous requests must not start
    unbounded generator calls); waiting for a slot counts against the budget."""
    order = request.order
    bound = log.bind(store=order.store, order_id=order.order_id, product_id=order.product_id)
    owner = f"receiver:{os.getpid()}"
    # Committed already leased: a worker woken by a queued job would deliver it through the channel as well.
    job = await queue.enqueue_leased(order, owner, lease_seconds=max(60.0, request.budget * 4), from_states=CLAIMABLE)
    if job is None:
        current = await queue.find(order.store, order.order_id)
        keys = _stored_keys(current)
        if keys is not None:  # asked again, or a worker made them (an order:paid came first)
            bound.info("fulfil.repeated", keys=len(keys))
            return Fulfilment(200, keys, repeated=True)
        state = current.state if current is not None else "missing"
        bound.warning("fulfil.unavailable", state=state)
        if state == JobState.CANCELLED.value:
            return Fulfilment(409, reason="order was cancelled (refunded or disputed)")
        return Fulfilment(503, reason="order is being processed; try again")
    step = "verify"
    started = queue.clock.monotonic()
    steps = Steps(queue, owner, queue.clock)
    try:
        with anyio.fail_after(request.budget):
            # The keys are answered, not mailed: the buyer email is kept as the marketplace gave it. Stored before
            # generating (unlike the worker's one commit), so that a pending refund stops it before any key is made.
            confirmed = await steps.verify(store, job, bound, check_recipient=False)
            await steps.save_verification(job, confirmed)
            step = "generate"
            content = (await steps.generate(store, job, bound, budget=request.budget, slots=slots)).content
    except TimeoutError:
        return await _failed(queue, job, owner, step, f"not ready within {request.budget:g} s", bound)
    except (Retry, Dead, OutOfStock) as exc:
        return await _failed(queue, job, owner, step, exc.reason, bound)
    except LeaseLost:
        return Fulfilment(503, reason="order is being processed; try again")
    except OrderCancelled as exc:  # refunded or disputed while the keys were made: the job is cancelled
        bound.info(f"order.{exc.settled.kind}", outcome="cancelled", flagged=False)
        return Fulfilment(409, reason="order was cancelled (refunded or disputed)")
    except (DeliveryDaemonError, Exception) as exc:  # a broken plugin must not turn into a 500 without a record
        return await _failed(queue, job, owner, step, f"{type(exc).__name__}: {exc}"[:500], bound)
    try:
        settled = await queue.transition(
            job,
            owner,
            Transition(
                JobState.DELIVERED,
                "deliver",
                "answered",
                count_attempt=True,
                duration_ms=(queue.clock.monotonic() - started) * 1000,
            ),
        )
        if settled is not None:  # refunded after the keys were stored: they are answered, so flagged
            bound.warning(f"order.{settled.kind}", outcome="flagged", flagged=True)
    except LeaseLost as exc:  # the keys are stored; answering them is still right
        bound.warning("job.lease_lost", error=str(exc))
    bound.info("fulfil.answered", keys=len(content.keys), quantity=confirmed.quantity)
    return Fulfilment(200, content.keys)


async def _failed(
    queue: JobQueue, job: Job, owner: str, step: str, reason: str, bound: structlog.typing.FilteringBoundLogger
) -> Fulfilment:
    bound.error("fulfil.failed", step=step, reason=reason)
    try:
        await queue.transition(job, owner, Transition(JobState.DEAD, step, "dead", error=reason, count_attempt=True))
    except LeaseLost as exc:
        bound.warning("job.lease_lost", error=str(exc))
    return Fulfilment(503, reason="the product could not be generated now")
