"""Step 2 of an order: ask the marketplace whether it is paid, and for what. The webhook is not trusted beyond
its signature; the quantity delivered is the one the marketplace's API reports."""

from __future__ import annotations

import asyncio

from delivery_daemon.clock import Clock
from delivery_daemon.errors import Dead
from delivery_daemon.marketplaces.base import Marketplace
from delivery_daemon.order import MAX_QUANTITY, MarketplaceOrder
from delivery_daemon.storage.models import Job

__all__ = ["MAX_QUANTITY", "Early", "verify"]


async def verify(marketplace: Marketplace, job: Job) -> MarketplaceOrder:
    """The confirmed order, or Dead (unpaid, other product, absurd quantity) / Retry from the adapter."""
    order = await marketplace.fetch_order(job)
    if not order.paid:
        raise Dead(f"order is not paid (marketplace status: {order.status})")
    if order.product_id != job.product_id:
        raise Dead(f"product mismatch: webhook says {job.product_id}, marketplace says {order.product_id}")
    if not 1 <= order.quantity <= MAX_QUANTITY:
        raise Dead(f"quantity {order.quantity} is outside 1..{MAX_QUANTITY}")
    return order


class Early:
    """A verification started while its job is being committed (the receiver's hand-off to its worker, issue #26):
    the marketplace's round trip overlaps the commit instead of following it. ``job`` is inserted, its commit not
    done yet. The worker awaits :attr:`task` in place of :func:`verify`; whoever does not hand the job over calls
    :meth:`cancel`."""

    def __init__(self, marketplace: Marketplace, job: Job, clock: Clock) -> None:
        self.started = clock.monotonic()
        self.task = asyncio.create_task(verify(marketplace, job), name=f"verify-{job.store}")
        # Its error is the worker's to handle when it awaits the task; if nothing does, it is dropped silently.
        self.task.add_done_callback(_retrieve)

    def cancel(self) -> None:
        """Stop it (the job was not handed over)."""
        self.task.cancel()


def _retrieve(task: asyncio.Task[MarketplaceOrder]) -> None:
    if not task.cancelled():
        task.exception()
