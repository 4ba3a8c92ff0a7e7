"""Sellix: ``X-Sellix-Signature`` (hex HMAC-SHA512 of the raw body with the webhook secret), ``X-Sellix-Event``.

The body is ``{"event": …, "data": <order object>}``; the event is read from ``X-Sellix-Event`` (else the body's
``event``). Order id ``data.uniqid``, product ``data.product_id``, buyer ``data.customer_email``; the quantity is
``data.quantity``, else, for cart orders, the quantity of the cart item (``data.cart.products[]``) whose
``uniqid`` is the product.

* ``product:dynamic`` — Sellix sends *one* request and takes the whole response body as the product: answered
  synchronously (:class:`~delivery_daemon.marketplaces.base.FulfilNow`) within ``sync_budget`` seconds (default 5),
  ``text/plain``, one key per line. The same order asked again gets the same keys.
* ``order:paid`` / ``order:paid:product`` — a job delivered through the store's configured channel, unless
  ``data.product_type`` is ``SERIALS`` or ``FILE``: Sellix delivered those from its own stock. A dynamic product's
  ``order:paid`` is the same order as its ``product:dynamic`` request (same uniqid), so it is a duplicate.
* ``order:disputed`` / ``order:disputed:product`` — the order is marked disputed.

With an ``api_key`` (the Sellix API secret) the store can also list its orders (``GET /orders?page=N`` on ``api_url``,
default :data:`API_URL`, Bearer authentication, newest first): :class:`ListingSellixAdapter` is the
:class:`~delivery_daemon.marketplaces.listing.OrderListing` the missed-order watchdog uses. A listed ``COMPLETED``
order is normalised as its ``order:paid`` webhook would be (payload ``event: listed``) and is deliverable through the
store's channel; self-delivered products are skipped as their webhook is, and a dynamic product's order (its goods
are handed over only in Sellix's own request) is raised as missed.

Sellix webhooks carry no event id; orders are deduplicated by (store, uniqid). A cart order naming several of
the seller's products in one ``order:paid`` is delivered for ``data.product_id`` only (a known limit).
The signature covers the whole body, so ``fetch_order`` reads the stored payload
(:mod:`delivery_daemon.marketplaces.signed_body`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from delivery_daemon.errors import Dead, Retry, WebhookRejected
from delivery_daemon.marketplaces.base import (
    AdapterContext,
    FulfilNow,
    OrderEvent,
    WebhookResult,
    create_client,
    load_object,
    transport_retry,
)
from delivery_daemon.marketplaces.listing import ListedOrder, OrderPage
from delivery_daemon.marketplaces.order_lists import epoch_seconds, listing_json
from delivery_daemon.marketplaces.signed_body import (
    DEFAULT_PRODUCT,
    SignedPayloadAdapter,
    email,
    identifier,
    order_payload,
    quantity,
)
from delivery_daemon.net.guard import BlockedDestination
from delivery_daemon.net.signatures import check_hex_hmac
from delivery_daemon.order import IncomingOrder

SELF_DELIVERED = ("SERIALS", "FILE")
API_URL = "https://dev.sellix.io/v1"
"""The Sellix API root the document names, for a store that sets ``api_key`` but no ``api_url``."""
DYNAMIC_NOT_DELIVERABLE = "a dynamic product's goods are handed over only in Sellix's own request"
LAST_PAGE = 1000
"""Pages a listing reads at most in one run (a guard against a marketplace that never answers an empty page)."""


def cart_quantity(data: dict[str, Any], product_id: str | None) -> int:
    """``data.quantity``, else the quantity of the cart item for ``product_id``."""
    if data.get("quantity") is not None:
        return quantity(data["quantity"], "data.quantity")
    cart = data.get("cart")
    items = cart.get("products") if isinstance(cart, dict) else None
    if isinstance(items, list):
        for item in items:
            if isinstance(item, dict) and product_id is not None and str(item.get("uniqid")) == product_id:
                return quantity(item.get("quantity"), "data.cart.products[].quantity")
    raise WebhookRejected(422, "missing field: data.quantity")


class SellixAdapter(SignedPayloadAdapter):
    """A Sellix shop."""

    marketplace = "sellix"

    def __init__(self, context: AdapterContext) -> None:
        super().__init__(context)
        self.budget = context.store.sync_budget

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookResult:
        check_hex_hmac(self.secret.encode(), body, headers.get("x-sellix-signature"), "sha512", "X-Sellix-Signature")
        message = load_object(body)
        event = headers.get("x-sellix-event") or message.get("event")
        data = message.get("data")
        if not isinstance(data, dict):
            raise WebhookRejected(422, "field data must be an object")
        if event not in (
            "product:dynamic",
            "order:paid",
            "order:paid:product",
            "order:disputed",
            "order:disputed:product",
        ):
            return None
        order_id = identifier(data.get("uniqid"), "data.uniqid")
        assert order_id is not None
        product_id = identifier(data.get("product_id"), "data.product_id", required=False)
        if event.startswith("order:disputed"):
            return OrderEvent(
                self.store, self.marketplace, order_id, "disputed", product_id or "", detail=f"Sellix {event}"
            )
        if event != "product:dynamic" and str(data.get("product_type", "")).upper() in SELF_DELIVERED:
            return None
        order = self.paid_order(data, order_id, product_id, str(data.get("status") or "PAID"), event)
        if event == "product:dynamic":
            return FulfilNow(order, self.budget)
        return order

    def paid_order(
        self, data: dict[str, Any], order_id: str, product_id: str | None, status: str, event: str
    ) -> IncomingOrder:
        """The order object ``data`` as a job's order (WebhookRejected 422 for a quantity it lacks)."""
        buyer = email(data.get("customer_email"))
        return IncomingOrder(
            store=self.store,
            marketplace=self.marketplace,
            order_id=order_id,
            product_id=product_id or DEFAULT_PRODUCT,
            buyer_email=buyer,
            payload=order_payload(cart_quantity(data, product_id), buyer, status, event=event),
        )


class ListingSellixAdapter(SellixAdapter):
    """A Sellix shop whose orders the daemon may list with the store's API secret (``api_key``)."""

    def __init__(self, context: AdapterContext) -> None:
        super().__init__(context)
        assert context.store.api_key is not None
        self._api_key = context.store.api_key.get_secret_value()
        self._client = create_client(context, base_url=context.store.api_url or API_URL)
        self.deliverable = context.store.delivery.channel in ("email", "webhook")

    async def list_paid_orders(self, since: float, cursor: str | None = None) -> OrderPage:
        """One page of ``GET /orders`` (newest first, as Sellix sorts it), its ``COMPLETED`` orders placed at or after
        ``since``; the next page is asked for while the page's oldest order is not older than ``since``."""
        page = int(cursor) if cursor and cursor.isdigit() else 1
        try:
            response = await self._client.call(
                "GET", f"/orders?page={page}", headers={"Authorization": f"Bearer {self._api_key}"}
            )
        except httpx.HTTPError as exc:
            raise transport_retry(exc) from None
        except BlockedDestination as exc:  # pinned to api_url's origin: the config must change
            raise Dead(f"not contacted: {exc}") from None
        data = listing_json(response, "Sellix GET /orders")
        body = data.get("data") if isinstance(data, dict) else None
        rows = body.get("orders") if isinstance(body, dict) else None
        if not isinstance(rows, list):
            raise Retry("Sellix GET /orders answer has no data.orders list", http_status=200)
        found: list[ListedOrder] = []
        oldest: float | None = None
        for row in rows:
            placed = epoch_seconds(row.get("created_at")) if isinstance(row, dict) else None
            if placed is None:
                continue
            oldest = placed if oldest is None else min(oldest, placed)
            if placed >= since and str(row.get("status", "")).upper() == "COMPLETED":
                listed = self._listed(row, placed)
                if listed is not None:
                    found.append(listed)
        more = oldest is not None and oldest >= since and page < LAST_PAGE
        return OrderPage(sorted(found, key=lambda listed: listed.created_at), str(page + 1) if more else None)

    def _listed(self, row: dict[str, Any], placed: float) -> ListedOrder | None:
        """A listed order as its ``order:paid`` webhook would be normalised; None for what that webhook ignores or
        an order whose fields the webhook would have refused."""
        kind = str(row.get("product_type", "")).upper()
        if kind in SELF_DELIVERED:
            return None
        try:
            order_id = identifier(row.get("uniqid"), "uniqid")
            product_id = identifier(row.get("product_id"), "product_id", required=False)
            assert order_id is not None
            order = self.paid_order(row, order_id, product_id, str(row.get("status") or "COMPLETED"), "listed")
        except WebhookRejected:
            return None
        if kind == "DYNAMIC":
            return ListedOrder(order, placed, False, DYNAMIC_NOT_DELIVERABLE)
        if not self.deliverable:
            return ListedOrder(order, placed, False, "the store has no email or webhook delivery channel")
        return ListedOrder(order, placed, True)

    def secrets(self) -> list[str]:
        return [*super().secrets(), self._api_key]

    async def aclose(self) -> None:
        await self._client.aclose()


class Sellix:
    """The marketplace type, for the explicit list handed to the daemon."""

    name = "sellix"

    def create(self, context: AdapterContext) -> SellixAdapter:
        key = context.store.api_key
        if key is not None and key.get_secret_value():
            return ListingSellixAdapter(context)
        return SellixAdapter(context)
