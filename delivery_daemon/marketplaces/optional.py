"""The optional parts of the adapter seam: protocols an adapter implements when its marketplace can do more than
take a signed JSON webhook (see :mod:`~delivery_daemon.marketplaces.base` for what every adapter must do, and
:mod:`~delivery_daemon.marketplaces.listing` for the order list the watchdog reads).

The core checks for them with ``isinstance`` (or ``hasattr`` on the webhook path, where a runtime-checkable protocol
costs ~60 µs a check) and never by the adapter's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from delivery_daemon.marketplaces.base import Marketplace, OrderEvent, WebhookResult
from delivery_daemon.order import Content
from delivery_daemon.storage.models import Job


@runtime_checkable
class UrlAuthenticated(Protocol):
    """Optional for an adapter whose marketplace does not sign its webhooks, so that the webhook URL itself is the
    secret (Gumroad's Ping: a token in the query string), and whose bodies are not JSON.

    The receiver then calls :meth:`parse_request` instead of ``parse_webhook``, with the request's query parameters,
    and accepts the body when its Content-Type is one of :attr:`body_types` (see :func:`accepted_body`).
    """

    body_types: tuple[str, ...]

    def parse_request(self, headers: Mapping[str, str], query: Mapping[str, str], body: bytes) -> WebhookResult:
        """As ``parse_webhook``, with the URL's query parameters to authenticate the request by."""
        ...


@runtime_checkable
class StockListing(Protocol):
    """Optional for an adapter: the marketplace shows a stock count per product and the seller may set it.

    Stock sync (:mod:`~delivery_daemon.stock.sync`) uses it for adapters that have it. Setting the count
    must not
    send the product back to moderation. Both raise a
    :class:`~delivery_daemon.errors.DeliveryDaemonError` (e.g. MarketplaceError) when the marketplace says no or
    cannot be reached.
    """

    async def listed_count(self, product_id: str) -> int:
        """The count the marketplace shows for the product now."""
        ...

    async def set_listed_count(self, product_id: str, count: int) -> None:
        """Set the count the marketplace shows for the product."""
        ...


@runtime_checkable
class AfterDelivery(Protocol):
    """Optional for an adapter: something to tell the marketplace once the buyer has the goods (Virtual Stores marks
    the shop's order fulfilled).

    Run by :mod:`~delivery_daemon.pipeline.followup` after the job is stored ``delivered``, recorded in the order's
    history as step ``fulfil``, and retried on its own (never resending the goods) while it raises Retry."""

    async def after_delivery(self, job: Job, content: Content) -> str:
        """Tell the marketplace; a line for the order's history. Raises Retry (try later) or Dead (give up)."""
        ...


def accepted_body(marketplace: Marketplace, content_type: str) -> str | None:
    """None when a webhook of ``content_type`` (lower-case, no parameters) may go to ``marketplace``'s adapter, else
    the type it takes, for the 415. JSON (``application/json``, ``…+json``) unless the adapter lists its own
    ``body_types`` (Paddle Classic and Gumroad: form-urlencoded)."""
    own: tuple[str, ...] | None = getattr(marketplace, "body_types", None)
    if own is not None:
        return None if content_type in own else " or ".join(own)
    if content_type == "application/json" or content_type.endswith("+json"):
        return None
    return "application/json"


@runtime_checkable
class ResolvesEvents(Protocol):
    """Optional for an adapter: its refunds and disputes name the payment, not the order the job was stored under
    (Stripe Checkout: a PaymentIntent, the job a Checkout Session). The receiver calls it for every
    :class:`OrderEvent` the adapter returned, after the signature check and before anything is stored."""

    async def resolve_event(self, event: OrderEvent) -> OrderEvent | None:
        """The event naming the order's id, or None when it concerns no order of this store (answered "ignored").
        Raises :class:`~delivery_daemon.errors.Retry` when the marketplace cannot be asked now (answered 503: the
        marketplace resends), or a :class:`~delivery_daemon.errors.MarketplaceError` when it refuses."""
        ...
