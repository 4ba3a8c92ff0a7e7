"""Stores that take payment through Stripe (e.g. the Virtual Stores system): Stripe webhook events.

Signature: ``Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>]``, hex HMAC-SHA256 of ``"{t}.{raw body}"`` with the
endpoint's signing secret (``webhook_secret``, the ``whsec_…`` string used as is). Any ``v1`` may match (Stripe
sends one per active secret while a secret is rolled). The timestamp must be within ``signature.tolerance``
(default 300 s) of our clock, both ways.

Events (everything else is acknowledged and ignored):

* ``payment_intent.succeeded`` and ``checkout.session.completed`` (with ``payment_status: paid``) create the job.
  The order id is the **PaymentIntent id** (``pi_…``) so that both events, and later refunds and disputes, all
  name the same order; the store's own order id (``metadata.order_id``) is kept in the payload. Product and
  quantity come from ``metadata.product_id`` (else the store's ``default`` product) and ``metadata.quantity``
  (else 1); the buyer's email from ``receipt_email`` / ``customer_details.email`` / ``metadata.email``.
* ``charge.refunded`` (full or partial) and ``charge.dispute.created`` mark the order named by their
  ``payment_intent``: cancelled if not delivered yet, flagged and logged if it was.

Each event's ``id`` (``evt_…``) is its dedup key: Stripe resends an event for up to three days, and a resend is
answered as a duplicate (see :mod:`delivery_daemon.storage.events`). ``fetch_order`` reads the signed event stored in
the job (:mod:`delivery_daemon.marketplaces.signed_body`).
"""

from __future__ import annotations

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
from delivery_daemon.net.signatures import verify_stripe
from delivery_daemon.order import IncomingOrder

PAID_EVENTS = ("payment_intent.succeeded", "checkout.session.completed")


class StripeStoreAdapter(SignedPayloadAdapter):
    """A Stripe-paid store."""

    marketplace = "stripe"

    def __init__(self, context: AdapterContext) -> None:
        super().__init__(context)
        self.tolerance = context.store.signature.tolerance

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookResult:
        verify_stripe(headers.get("stripe-signature"), body, self.secret, self.clock.now(), self.tolerance)
        event = load_object(body)
        event_id = identifier(event.get("id"), "id")
        kind = event.get("type")
        obj = mapping(mapping(event, "data"), "object")
        if kind in PAID_EVENTS:
            return self._order(kind, obj, event_id)
        if kind in ("charge.refunded", "charge.dispute.created"):
            order_id = identifier(
                obj.get("payment_intent") or obj.get("charge") or obj.get("id"), "data.object.payment_intent"
            )
            assert order_id is not None
            metadata = optional_mapping(obj, "metadata")
            product_id = identifier(metadata.get("product_id"), "metadata.product_id", required=False)
            if kind == "charge.refunded":
                detail = (
                    f"refunded {obj.get('amount_refunded')} of {obj.get('amount')} {obj.get('currency', '')}".strip()
                )
                return OrderEvent(
                    self.store,
                    self.marketplace,
                    order_id,
                    "refunded",
                    product_id or "",
                    detail=detail,
                    event_id=event_id,
                )
            reason = obj.get("reason")
            return OrderEvent(
                self.store,
                self.marketplace,
                order_id,
                "disputed",
                product_id or "",
                detail=f"dispute reason: {reason}" if isinstance(reason, str) else None,
                event_id=event_id,
            )
        return None

    def _order(self, kind: str, obj: dict[str, Any], event_id: str | None) -> IncomingOrder | None:
        metadata = optional_mapping(obj, "metadata")
        if kind == "checkout.session.completed":
            if obj.get("payment_status") != "paid":
                return None  # delayed payment methods: payment_intent.succeeded follows when the money is in
            order_id = identifier(obj.get("payment_intent") or obj.get("id"), "data.object.payment_intent")
            buyer = email(optional_mapping(obj, "customer_details").get("email")) or email(obj.get("customer_email"))
        else:
            if obj.get("status", "succeeded") != "succeeded":
                return None
            order_id = identifier(obj.get("id"), "data.object.id")
            buyer = email(obj.get("receipt_email"))
        assert order_id is not None
        buyer = buyer or email(metadata.get("email"))
        product_id = identifier(metadata.get("product_id"), "metadata.product_id", required=False)
        count = quantity(metadata.get("quantity", 1), "metadata.quantity")
        reference = identifier(metadata.get("order_id"), "metadata.order_id", required=False)
        return IncomingOrder(
            store=self.store,
            marketplace=self.marketplace,
            order_id=order_id,
            product_id=product_id or DEFAULT_PRODUCT,
            event_id=event_id,
            buyer_email=buyer,
            payload=order_payload(count, buyer, "succeeded", reference=reference, event=kind),
        )


class StripeStore:
    """The marketplace type, for the explicit list handed to the daemon."""

    name = "stripe"

    def create(self, context: AdapterContext) -> StripeStoreAdapter:
        return StripeStoreAdapter(context)
