"""The order-list seam: what the missed-order watchdog asks of a marketplace that can list its orders (issue #24).

An adapter implements :class:`OrderListing` when its marketplace has an order-list API (SoftStore ``GET /orders``,
Sellix ``GET /orders``, Virtual Stores ``GET /api/orders``, ...). The watchdog pages through the paid orders created
since a time, and for each order without a job either queues it (``deliverable``) or raises it as missed: the seller
must act, because something only the webhook carries (SoftStore's delivery token) is absent from the list.

The watchdog keeps the cursor between runs, so a run costs the new orders, not the whole history.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from delivery_daemon.order import IncomingOrder


@dataclass(frozen=True)
class ListedOrder:
    """One paid order as the marketplace's list shows it, normalised like its webhook would be."""

    order: IncomingOrder
    """The order as the receiver would have stored it; its ``payload`` holds what verification and delivery need."""
    created_at: float
    """When the marketplace says the order was placed or paid (unix seconds): the watchdog's cursor moves on it."""
    deliverable: bool
    """True when the daemon can deliver it without the webhook (email, the webhook channel, or a marketplace API
    that needs no token from the webhook); False raises it as a missed order instead."""
    why_not: str | None = None
    """When not ``deliverable``: one line for the seller saying what is missing (e.g. "the delivery token arrives
    only in the webhook")."""


@dataclass(frozen=True)
class OrderPage:
    """One page of the marketplace's paid orders, oldest first."""

    orders: list[ListedOrder]
    cursor: str | None
    """Opaque: pass it back for the next page; None when this was the last page."""


@runtime_checkable
class OrderListing(Protocol):
    """Optional for an adapter: the marketplace lists its orders through its API."""

    async def list_paid_orders(self, since: float, cursor: str | None = None) -> OrderPage:
        """Paid orders placed at or after ``since`` (unix seconds), oldest first, one page per call (``cursor`` from
        the previous page, or None for the first). Raises :class:`~delivery_daemon.errors.Retry` when the
        marketplace cannot be reached or answers 5xx, :class:`~delivery_daemon.errors.MarketplaceError` when it
        refuses (e.g. a bad API key)."""
        ...
