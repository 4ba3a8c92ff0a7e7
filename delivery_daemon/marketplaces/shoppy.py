"""Shoppy: ``webhook_type`` 100 (order completed) creates the job; 200 (order disputed) is recorded and logged.

Signature: the Shoppy document does not say how webhooks are signed. Public Shoppy integrations verify an
``X-Shoppy-Signature`` header holding the hex HMAC-SHA512 of the raw body with the webhook secret, and that is the
default here; ``signature.header`` and ``signature.algorithm`` (``sha512`` | ``sha256``) change it should a
seller's account sign differently. There is no way to switch the check off.

Fields (the document's example shows the shape ``{"webhook_type": "100", "data": {"order": …, "product": …}}``):
order id ``data.order.id`` (else ``invoice_id``, else ``order_id``), product ``data.order.product_id`` (else
``data.product.id`` / ``product_id``), quantity ``data.order.quantity`` (else 1), buyer ``data.order.email``.

The document's own paid-order example carries no order id at all. Such a webhook is accepted under an id derived
from what its signature covers (:func:`derived_order_id`: ``body-`` and a digest of ``data.order`` and the product),
so Shoppy's resends of it — even serialised differently — are the same order and deliver nothing twice; the job's
payload says ``derived_id: true``. The price of that choice: two purchases whose order objects are identical (the
same buyer, address and browser, the same product) are one order. Refusing instead would have left every such order
undelivered; docs/marketplaces.md#shoppy explains it to sellers.
The signature covers the whole body, so ``fetch_order`` reads the stored payload
(:mod:`delivery_daemon.marketplaces.signed_body`). Other webhook types are acknowledged and ignored.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from delivery_daemon.marketplaces.base import AdapterContext, OrderEvent, WebhookResult, load_object
from delivery_daemon.marketplaces.signed_body import (
    DEFAULT_PRODUCT,
    SignedPayloadAdapter,
    email,
    identifier,
    mapping,
    optional_mapping,
    order_payload,
    quantity,
)
from delivery_daemon.net.signatures import check_hex_hmac
from delivery_daemon.order import IncomingOrder

DEFAULT_HEADER = "X-Shoppy-Signature"


def _first(data: dict[str, Any], *names: str) -> Any:
    return next((data[n] for n in names if data.get(n) not in (None, "")), None)


def derived_order_id(order: dict[str, Any], product_id: str) -> str:
    """The order id of a webhook that names none: ``body-`` and 128 bits of SHA-256 over the signed order object and
    the product, in canonical JSON (sorted keys, no spaces), so a resend serialised differently is the same order."""
    canonical = json.dumps({"order": order, "product": product_id}, sort_keys=True, separators=(",", ":"))
    return "body-" + hashlib.sha256(canonical.encode()).hexdigest()[:32]


class ShoppyAdapter(SignedPayloadAdapter):
    """A Shoppy shop."""

    marketplace = "shoppy"

    def __init__(self, context: AdapterContext) -> None:
        super().__init__(context)
        self.header = context.store.signature.header or DEFAULT_HEADER
        self.algorithm = context.store.signature.algorithm or "sha512"

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookResult:
        check_hex_hmac(self.secret.encode(), body, headers.get(self.header), self.algorithm, self.header)
        message = load_object(body)
        kind = str(message.get("webhook_type", ""))
        if kind not in ("100", "200"):
            return None
        data = mapping(message, "data")
        order = mapping(data, "order")
        product = optional_mapping(data, "product")
        product_id = (
            identifier(
                _first(order, "product_id") or _first(product, "id", "product_id"),
                "data.order.product_id",
                required=False,
            )
            or DEFAULT_PRODUCT
        )
        order_id = identifier(_first(order, "id", "invoice_id", "order_id"), "data.order.id", required=False)
        derived = order_id is None
        if order_id is None:
            order_id = derived_order_id(order, product_id)
        if kind == "200":
            return OrderEvent(
                self.store,
                self.marketplace,
                order_id,
                "disputed",
                product_id,
                detail="Shoppy webhook 200 (order disputed)",
            )
        buyer = email(order.get("email"))
        return IncomingOrder(
            store=self.store,
            marketplace=self.marketplace,
            order_id=order_id,
            product_id=product_id,
            buyer_email=buyer,
            payload=order_payload(
                quantity(order.get("quantity", 1), "data.order.quantity"),
                buyer,
                "completed",
                **({"derived_id": True} if derived else {}),
            ),
        )


class Shoppy:
    """The marketplace type, for the explicit list handed to the daemon."""

    name = "shoppy"

    def create(self, context: AdapterContext) -> ShoppyAdapter:
        return ShoppyAdapter(context)
