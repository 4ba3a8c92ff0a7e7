"""Step 2 of an order: ask the marketplace whether it is paid, and for what. The webhook is not trusted beyond
its signature; the quantity delivered is the one the marketplace's API reports."""

from __future__ import annotations

from delivery_daemon.errors import Dead
from delivery_daemon.marketplaces.base import Marketplace
from delivery_daemon.order import MAX_QUANTITY, MarketplaceOrder
from delivery_daemon.storage.models import Job

__all__ = ["MAX_QUANTITY", "verify"]


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
