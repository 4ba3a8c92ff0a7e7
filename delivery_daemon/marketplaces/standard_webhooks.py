"""Any other platform: webhooks signed per the Standard Webhooks specification.

Headers ``webhook-id``, ``webhook-timestamp`` (unix seconds) and ``webhook-signature`` (space-separated
``v1,<base64>`` values, any one of which may match), HMAC-SHA256 over ``"{id}.{timestamp}.{raw body}"`` with the
base64 key of the store's ``webhook_secret`` (``whsec_…``). The timestamp must be within ``signature.tolerance``
(default 300 s, the specification's five minutes) of our clock, both ways. ``webhook-id`` is the dedup key.

The body the daemon expects (documented for sellers wiring their platform to it)::

    {"type": "order.paid", "data": {"order_id": "A-1", "product_id": "p1", "quantity": 2, "email": "b@x.org"}}

``order.paid`` creates the job (``product_id`` optional: the store's ``default``; ``quantity`` optional: 1);
``order.refunded`` and ``order.disputed`` (``data.order_id``) mark the order; any other type is ignored.
``fetch_order`` reads the signed body stored in the job (:mod:`delivery_daemon.marketplaces.signed_body`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from delivery_daemon.config import WHSEC_EXAMPLE, WHSEC_FORM, whsec_key
from delivery_daemon.errors import ConfigError
from delivery_daemon.marketplaces.base import AdapterContext, OrderEvent, WebhookResult, load_object
from delivery_daemon.marketplaces.signed_body import (
    DEFAULT_PRODUCT,
    SignedPayloadAdapter,
    email,
    identifier,
    mapping,
    order_payload,
    quantity,
)
from delivery_daemon.net.signatures import verify_standard
from delivery_daemon.order import IncomingOrder


class StandardWebhooksAdapter(SignedPayloadAdapter):
    """A store on a platform that signs its webhooks per Standard Webhooks."""

    marketplace = "standard-webhooks"

    def __init__(self, context: AdapterContext) -> None:
        super().__init__(context)
        self.key = self.signing_key(self.secret, f"{context.path}.webhook_secret")
        self.tolerance = context.store.signature.tolerance

    def signing_key(self, secret: str, path: str) -> bytes:
        """The HMAC key of the configured secret (``whsec_<base64>``), else ConfigError at ``path``. A preset of
        a platform whose secret has another form (Polar) overrides this."""
        try:
            return whsec_key(secret)
        except ValueError as exc:
            raise ConfigError(path, str(exc), WHSEC_FORM, WHSEC_EXAMPLE) from None

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookResult:
        msg_id = verify_standard(headers, body, [self.key], self.clock.now(), self.tolerance)
        message = load_object(body)
        return self.result(message.get("type"), mapping(message, "data"), msg_id)

    def result(self, kind: Any, data: dict[str, Any], msg_id: str) -> WebhookResult:
        """The order or event a verified message of type ``kind`` carries (the daemon's own body shape, above); a
        platform preset with a body of its own (Polar) overrides this."""
        order_id = identifier(data.get("order_id"), "data.order_id")
        assert order_id is not None
        product_id = identifier(data.get("product_id"), "data.product_id", required=False)
        if kind == "order.paid":
            buyer = email(data.get("email"))
            return IncomingOrder(
                store=self.store,
                marketplace=self.marketplace,
                order_id=order_id,
                product_id=product_id or DEFAULT_PRODUCT,
                event_id=msg_id,
                buyer_email=buyer,
                payload=order_payload(quantity(data.get("quantity", 1), "data.quantity"), buyer, "paid"),
            )
        if kind in ("order.refunded", "order.disputed"):
            return OrderEvent(
                self.store,
                self.marketplace,
                order_id,
                "refunded" if kind == "order.refunded" else "disputed",
                product_id or "",
                event_id=msg_id,
            )
        return None


class StandardWebhooks:
    """The marketplace type, for the explicit list handed to the daemon."""

    name = "standard-webhooks"

    def create(self, context: AdapterContext) -> StandardWebhooksAdapter:
        return StandardWebhooksAdapter(context)
