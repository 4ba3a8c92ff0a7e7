"""The steps that take a leased job to stored content, written once for both callers.

verify (the marketplace confirms the order) → check the recipient → save the verification → resolve the product →
build the :class:`~delivery_daemon.generators.contract.OrderContext` → generate → save the content. The worker
(:mod:`.worker`) and synchronous fulfilment (:mod:`.fulfil`) run these and keep only what differs between them: the
worker its leases, retries, slots, observers and the delivery through the store's sink; fulfilment its time budget and
the keys it answers. Each step logs what it did (``order.verified``, ``content.generated``) and raises what the
caller turns into the job's outcome (:class:`~delivery_daemon.errors.Dead`, ``Retry``, ``Held``, ``OutOfStock``,
:class:`~delivery_daemon.storage.queue.OrderCancelled`, :class:`~delivery_daemon.storage.queue.LeaseLost`, ...).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import structlog

from delivery_daemon.clock import Clock
from delivery_daemon.errors import Dead
from delivery_daemon.generators.contract import OrderContext, idempotency_key
from delivery_daemon.order import Content, OrderItem
from delivery_daemon.pipeline.generate import generate
from delivery_daemon.pipeline.items import generate_items
from delivery_daemon.pipeline.stores import Product, Store
from delivery_daemon.pipeline.verify import Early, verify
from delivery_daemon.recipient import recipient
from delivery_daemon.storage.jobs import OrderCancelled, Verified
from delivery_daemon.storage.models import Job
from delivery_daemon.storage.queue import JobQueue

Logger = structlog.typing.FilteringBoundLogger


@dataclass(frozen=True)
class Confirmed(Verified):
    """What the marketplace confirmed, with the cart's digital items when it lists them (``MarketplaceOrder.items``;
    empty for a one-product order). The items are not stored: see :meth:`Steps.generate`."""

    items: tuple[OrderItem, ...] = ()


@dataclass(frozen=True)
class Made:
    """A job's generated content, stored: what the generator made and how long it took."""

    product: Product
    content: Content
    duration_ms: float


def order_context(store: Store, job: Job) -> tuple[Product, OrderContext]:
    """The job's product and what its generator is told; Dead when no generator is configured for the product."""
    product = store.product(job.product_id)
    if product is None:
        raise Dead(f"no generator is configured for product {job.product_id}")
    assert job.quantity is not None, "an order is verified before it is generated"
    return product, OrderContext(
        store=job.store,
        marketplace=job.marketplace,
        order_id=job.order_id,
        product_id=job.product_id,
        quantity=job.quantity,
        buyer_email=job.buyer_email,
        options=product.options,
        idempotency_key=idempotency_key(job.store, job.order_id, job.issue),
    )


@dataclass(frozen=True)
class Steps:
    """The steps, for jobs leased to ``owner`` in ``queue``; durations are measured on ``clock``."""

    queue: JobQueue
    owner: str
    clock: Clock

    def _ms(self, since: float) -> float:
        return (self.clock.monotonic() - since) * 1000

    async def verify(
        self, store: Store, job: Job, bound: Logger, *, check_recipient: bool = True, early: Early | None = None
    ) -> Verified:
        """Ask the marketplace for the order and take what it confirms onto ``job`` (not stored yet: see
        :meth:`save_verification` and :meth:`generate`). With ``check_recipient``, the buyer email is the one the
        store's channel will mail (:func:`~delivery_daemon.recipient.recipient`; Held if it is not one mailbox).
        With ``early``, the answer of that verification, started before the job was committed, is used."""
        started = self.clock.monotonic() if early is None else early.started
        order = await (verify(store.marketplace, job) if early is None else early.task)
        buyer_email = recipient(store.settings, order.buyer_email) if check_recipient else order.buyer_email
        verified = Confirmed(order.quantity, buyer_email, self._ms(started), order.items)
        job.quantity, job.buyer_email = verified.quantity, verified.buyer_email
        bound.info("order.verified", quantity=order.quantity, duration_ms=round(verified.duration_ms, 1))
        return verified

    async def save_verification(self, job: Job, verified: Verified) -> None:
        """Store what the marketplace confirmed; OrderCancelled if a refund or dispute was pending."""
        await self.queue.save_verification(
            job, self.owner, verified.quantity, verified.buyer_email, verified.duration_ms
        )

    async def generate(
        self,
        store: Store,
        job: Job,
        bound: Logger,
        *,
        budget: float,
        verified: Verified | None = None,
        slots: asyncio.Semaphore | None = None,
    ) -> Made:
        """Resolve the product, call its generator within ``budget`` seconds (holding one of ``slots`` meanwhile, if
        given: the wait counts) and store the content on ``job``; it is never generated again for this job.

        ``verified`` not stored yet is stored with the content, one commit instead of two; if generating or storing
        fails it is stored alone, so that a retry does not verify again (unless the failure is OrderCancelled: that
        committed it already).

        A cart (``verified`` lists items) runs every item's generator (:mod:`.items`). The items are not stored with
        the verification, so a cart whose verification was stored but whose content was not (a generator failed) is
        read again from the marketplace for them; what was verified and stored stays as it is."""
        try:
            items = verified.items if isinstance(verified, Confirmed) else ()
            if not items and getattr(store.marketplace, "itemised", False):
                items = (await verify(store.marketplace, job)).items
            started = self.clock.monotonic()
            async with slots if slots is not None else contextlib.nullcontext():
                if items:
                    product, content = await generate_items(store, job, items, budget=budget)
                else:
                    product, context = order_context(store, job)
                    content = await generate(product, context, budget=budget)
            elapsed = self._ms(started)
            raw = content.to_json()
            await self.queue.save_content(job, self.owner, raw, elapsed, verified=verified)
        except OrderCancelled:
            raise
        except Exception:
            if verified is not None:
                await self.save_verification(job, verified)
            raise
        job.content = raw
        bound.info(
            "content.generated", generator=product.generator_name, keys=len(content.keys), duration_ms=round(elapsed, 1)
        )
        return Made(product, content, elapsed)
