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

Sellix webhooks carry no event id; orders are deduplicated by (store, uniqid). A cart order naming several of
the seller's products in one ``order:paid`` is delivered for ``data.product_id`` only (a known limit).
The signature covers the whole body, so ``fetch_order`` reads the stored payload
(:mod:`delivery_daemon.marketplaces.signed_body`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from delivery_daemon.errors import WebhookRejected
from delivery_daemon.marketplaces.base import AdapterContext, FulfilNow, OrderEvent, WebhookResult, load_object
from delivery_daemon.marketplaces.signed_body import (
    DEFAULT_PRODUCT,
    SignedPayloadAdapter,
    email,
    identifier,
    order_payload,
    quantity,
)
from delivery_daemon.net.signatures import check_hex_hmac
from delivery_daemon.order import IncomingOrder

SELF_DELIVERED = ("SERIALS", "FILE")


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
        buyer = email(data.get("customer_email"))
        order = IncomingOrder(
            store=self.store,
            marketplace=self.marketplace,
            order_id=order_id,
            product_id=product_id or DEFAULT_PRODUCT,
            buyer_email=buyer,
            payload=order_payload(
                cart_quantity(data, product_id), buyer, str(data.get("status") or "PAID"), event=event
            ),
        )
        if event == "product:dynamic":
            return FulfilNow(order, self.budget)
        return order


class Sellix:
    """The marketplace type, for the explicit list handed to the daemon."""

    name = "sellix"

    def create(self, context: AdapterContext) -> SellixAdapter:
        return SellixAdapter(context)
