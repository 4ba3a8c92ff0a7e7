"""Polar: a named preset of the Standard Webhooks receiver (:mod:`delivery_daemon.marketplaces.standard_webhooks`).

The signature is Standard Webhooks' (``webhook-id`` / ``webhook-timestamp`` / ``webhook-signature``, 5 minutes'
tolerance, ``webhook-id`` the dedup key); what differs is the secret and the body.

* **The secret.** Polar's dashboard shows the endpoint's secret as text, and Polar signs with the UTF-8 bytes of
  that text as the HMAC key (its own SDK base64-encodes the text before handing it to a generic Standard Webhooks
  library: the usual reason a check fails). ``webhook_secret`` takes what Polar shows, as it is; a value already in
  the ``whsec_<base64>`` form (someone encoded it for a generic library) is decoded as such instead.
* **The body** is Polar's: ``{"type": "order.paid", "timestamp": …, "data": <Order>}``. ``order.paid`` creates the
  job: order id ``data.id``, product ``data.product_id`` (else ``data.product.id``, else the store's ``default``),
  buyer ``data.customer.email`` (else the older ``data.user.email``), quantity 1 (a Polar order is one product).
  ``order.refunded`` (full or partial) is the refund path. Every other type is acknowledged and ignored.

Polar's documents say nothing of disputes in the order events; ``fetch_order`` reads the signed body stored in the
job, as for any Standard Webhooks platform (the whole body is signed).
"""

from __future__ import annotations

from typing import Any

from delivery_daemon.config import whsec_key
from delivery_daemon.config.stores import WHSEC_PREFIX
from delivery_daemon.errors import ConfigError
from delivery_daemon.marketplaces.base import AdapterContext, OrderEvent, WebhookResult
from delivery_daemon.marketplaces.signed_body import DEFAULT_PRODUCT, email, identifier, optional_mapping, order_payload
from delivery_daemon.marketplaces.standard_webhooks import StandardWebhooksAdapter
from delivery_daemon.order import IncomingOrder

KEY_FORM = "the webhook secret Polar's dashboard shows for this endpoint, as it is (at least 16 characters)"
SECRET_EXAMPLE = "polar_whs_4c1b7f0e9a2d4e8f9b3c5a7d1e6f2a8b"  # noqa: S105 (an example printed in errors)
"""A well-formed example (not a secret in use anywhere: examples are printed in errors)."""


def polar_key(secret: str) -> bytes:
    """The HMAC key of a Polar secret: the text's UTF-8 bytes, or the decoded key of a ``whsec_<base64>`` value."""
    if secret.startswith(WHSEC_PREFIX):
        return whsec_key(secret)
    if len(secret) < 16:
        raise ValueError("the secret is shorter than 16 characters")
    return secret.encode()


class PolarAdapter(StandardWebhooksAdapter):
    """A Polar organisation's webhook endpoint."""

    marketplace = "polar"

    def signing_key(self, secret: str, path: str) -> bytes:
        try:
            return polar_key(secret)
        except ValueError as exc:
            raise ConfigError(path, str(exc), KEY_FORM, SECRET_EXAMPLE) from None

    def result(self, kind: Any, data: dict[str, Any], msg_id: str) -> WebhookResult:
        if kind not in ("order.paid", "order.refunded"):
            return None
        order_id = identifier(data.get("id"), "data.id")
        assert order_id is not None
        product = data.get("product_id") or optional_mapping(data, "product").get("id")
        product_id = identifier(product, "data.product_id", required=False) or DEFAULT_PRODUCT
        if kind == "order.refunded":
            status = data.get("status")
            detail = f"Polar order.refunded (status {status})" if isinstance(status, str) else "Polar order.refunded"
            return OrderEvent(self.store, self.marketplace, order_id, "refunded", product_id, detail, msg_id)
        buyer = email(optional_mapping(data, "customer").get("email") or optional_mapping(data, "user").get("email"))
        return IncomingOrder(
            store=self.store,
            marketplace=self.marketplace,
            order_id=order_id,
            product_id=product_id,
            event_id=msg_id,
            buyer_email=buyer,
            payload=order_payload(1, buyer, "paid"),
        )


class Polar:
    """The marketplace type, for the explicit list handed to the daemon."""

    name = "polar"

    def create(self, context: AdapterContext) -> PolarAdapter:
        return PolarAdapter(context)
