"""Paddle Classic's fulfilment webhook: Paddle asks for the goods in the request and mails the buyer the answer.

Paddle Classic calls the seller's URL when an order for a product with webhook fulfilment is processed, with the
order's fields form-urlencoded (``p_order_id``, ``p_product_id``, ``p_quantity``, ``event_time``, …, and the
``email`` custom field when the seller adds it) and ``p_signature``: base64 RSA-SHA1 over the PHP-serialised,
key-sorted fields minus ``p_signature`` (:mod:`delivery_daemon.net.classic_signature`), checked against the vendor's
public key (``webhook_secret``: its PEM text, e.g. ``${file:/run/secrets/paddle_public_key.pem}``).

The answer's body is what the buyer gets: the request is answered synchronously
(:class:`~delivery_daemon.marketplaces.base.FulfilNow`, the path Sellix dynamic products use) within
``sync_budget`` seconds with the keys as ``text/plain``, one per line; the same order asked again gets the same keys.
Only ``POST`` is accepted (Paddle may be set to ``GET``; the daemon's webhook route takes POST). The order id is
``p_order_id``; the signature covers every field, so ``fetch_order`` reads the stored payload
(:mod:`delivery_daemon.marketplaces.signed_body`).

Paddle Classic's alerts (Vendor Settings > Alerts) come form-urlencoded and signed the same way, with
``alert_name`` and ``alert_id``, and may be sent to the same URL: ``payment_refunded`` is a refund and
``payment_dispute_created`` a dispute (an :class:`~delivery_daemon.marketplaces.base.OrderEvent` on ``order_id``,
the alerts' name for the Paddle order id the fulfilment request calls ``p_order_id``); a ``refund_type`` of ``vat``
(tax only: the buyer keeps the goods) and every other alert are acknowledged and ignored. ``alert_id`` is the event
id, so a resent alert is a duplicate.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal
from urllib.parse import parse_qsl

from delivery_daemon.errors import ConfigError, WebhookRejected
from delivery_daemon.marketplaces.base import AdapterContext, FulfilNow, OrderEvent, WebhookResult
from delivery_daemon.marketplaces.signed_body import (
    DEFAULT_PRODUCT,
    SignedPayloadAdapter,
    email,
    identifier,
    order_payload,
    quantity,
)
from delivery_daemon.net.classic_signature import load_public_key, verify_fields
from delivery_daemon.order import IncomingOrder

FORM = "application/x-www-form-urlencoded"
ALERTS: dict[str, Literal["refunded", "disputed"]] = {
    "payment_refunded": "refunded",
    "payment_dispute_created": "disputed",
}
"""The Classic alerts that mark an order, by ``alert_name``."""
PEM_FORM = "the vendor's RSA public key as PEM text (-----BEGIN PUBLIC KEY-----…), best as ${file:/path/key.pem}"


def form_fields(body: bytes) -> dict[str, str]:
    """A form-urlencoded body as one string per field; WebhookRejected 400 when it is not one (or repeats a field:
    which value was signed would be a guess)."""
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body))
    except (UnicodeDecodeError, ValueError):
        raise WebhookRejected(400, "body is not a form-urlencoded UTF-8 text") from None
    fields = dict(pairs)
    if len(fields) != len(pairs):
        raise WebhookRejected(400, "a form field is repeated")
    return fields


class PaddleClassicAdapter(SignedPayloadAdapter):
    """A Paddle Classic vendor's fulfilment webhook."""

    marketplace = "paddle-classic"
    body_types = (FORM,)
    """The receiver accepts this Content-Type for the store (instead of JSON)."""

    def __init__(self, context: AdapterContext) -> None:
        super().__init__(context)
        try:
            self.public_key = load_public_key(self.secret)
        except ValueError as exc:
            raise ConfigError(f"{context.path}.webhook_secret", str(exc), PEM_FORM) from None
        self.budget = context.store.sync_budget

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookResult:
        fields = form_fields(body)
        verify_fields(self.public_key, fields)
        if "alert_name" in fields:
            return self._alert(fields)
        order_id = identifier(fields.get("p_order_id"), "p_order_id")
        assert order_id is not None
        product_id = identifier(fields.get("p_product_id"), "p_product_id", required=False)
        count = quantity(fields.get("p_quantity") or fields.get("quantity") or "1", "p_quantity")
        buyer = email(fields.get("email"))
        order = IncomingOrder(
            store=self.store,
            marketplace=self.marketplace,
            order_id=order_id,
            product_id=product_id or DEFAULT_PRODUCT,
            buyer_email=buyer,
            payload=order_payload(count, buyer, "processed", event="fulfillment"),
        )
        return FulfilNow(order, self.budget)

    def _alert(self, fields: dict[str, str]) -> OrderEvent | None:
        """A signed alert: a refund or dispute of ``order_id``, or None for anything else."""
        kind = ALERTS.get(fields["alert_name"])
        if kind is None or fields.get("refund_type") == "vat":
            return None
        alert_id = identifier(fields.get("alert_id"), "alert_id")
        order_id = identifier(fields.get("order_id"), "order_id")
        assert order_id is not None
        detail = f"Paddle Classic {fields['alert_name']}"
        reason = fields.get("refund_reason") or fields.get("status")
        if reason:
            detail += f": {reason}"
        return OrderEvent(self.store, self.marketplace, order_id, kind, detail=detail[:500], event_id=alert_id)

    def secrets(self) -> list[str]:
        return []  # a public key: nothing to hide, and its PEM lines would only slow the redactor


class PaddleClassic:
    """The marketplace type, for the explicit list handed to the daemon."""

    name = "paddle-classic"

    def create(self, context: AdapterContext) -> PaddleClassicAdapter:
        return PaddleClassicAdapter(context)
