"""SellAuth: dynamic delivery (``INVOICE.ITEM.DELIVER-DYNAMIC``), answered synchronously with the keys.

SellAuth sends one POST per invoice item and shows the buyer the body of the answer; it waits 10 s for it and tries
3 times in all, 5 s apart, with the same ``Idempotency-Key``. The daemon answers through the synchronous path
(:class:`~delivery_daemon.marketplaces.base.FulfilNow`, as for Sellix dynamic products): the keys are generated
within ``sync_budget`` seconds (keep it under SellAuth's 10 s), stored, then answered ``text/plain``, one per line.

Signature: ``X-Signature`` is the hex HMAC-SHA256 with the shop's webhook secret, checked on the raw body bytes.
SellAuth's guide computes it over ``json_encode`` / ``JSON.stringify`` of the parsed body, i.e. over the JSON the
sender wrote, which is the body it sends; nothing in the guide says the bytes differ, so there is no fallback to
a re-encoded form (which would also have to guess PHP's escaping of ``/`` and non-ASCII). ``X-Timestamp`` is not
covered by the signature and is not checked: a replayed request is answered the keys already stored for its item.

Order id ``{id}-{item.id}`` (the invoice and its item): one job per item, so a retry, whatever its
``Idempotency-Key``, is answered the stored keys, and two items of one invoice are two orders. Without
``item.id`` the ``Idempotency-Key`` names the order (``key-`` and the key). Product ``item.product_id``, quantity
``item.quantity`` (else the invoice's ``amount``, else 1), buyer ``email`` (else ``customer.email``). The payload
keeps the item's ``variant_id`` and the ``Idempotency-Key``.

Other events (the ``NOTIFICATION.*`` HTTP notifications, which carry only ids) are acknowledged and ignored: SellAuth
names no refund or dispute notification in its guides, so none is mapped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from delivery_daemon.errors import WebhookRejected
from delivery_daemon.marketplaces.base import AdapterContext, FulfilNow, WebhookResult, load_object
from delivery_daemon.marketplaces.signed_body import (
    SignedPayloadAdapter,
    email,
    identifier,
    optional_mapping,
    order_payload,
    quantity,
)
from delivery_daemon.net.signatures import check_hex_hmac
from delivery_daemon.order import IncomingOrder

EVENT = "INVOICE.ITEM.DELIVER-DYNAMIC"
HEADER = "X-Signature"
IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9_.:-]{1,120}$")


class SellAuthAdapter(SignedPayloadAdapter):
    """A SellAuth shop's dynamic-delivery products."""

    marketplace = "sellauth"

    def __init__(self, context: AdapterContext) -> None:
        super().__init__(context)
        self.budget = context.store.sync_budget

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookResult:
        check_hex_hmac(self.secret.encode(), body, headers.get("x-signature"), "sha256", HEADER)
        message = load_object(body)
        if message.get("event") != EVENT:
            return None
        invoice = identifier(message.get("id"), "id")
        item = optional_mapping(message, "item")
        key = headers.get("idempotency-key")
        if key is not None and not IDEMPOTENCY_KEY.match(key):
            raise WebhookRejected(400, "Idempotency-Key must be 1 to 120 letters, digits or _.:-")
        item_id = identifier(item.get("id"), "item.id", required=False)
        if item_id is not None:
            order_id = f"{invoice}-{item_id}"
        elif key is not None:
            order_id = f"key-{key}"
        else:
            raise WebhookRejected(422, "missing field: item.id (and no Idempotency-Key)")
        product_id = identifier(item.get("product_id"), "item.product_id")
        assert product_id is not None
        count = quantity(item.get("quantity") or message.get("amount") or 1, "item.quantity")
        buyer = email(message.get("email")) or email(optional_mapping(message, "customer").get("email"))
        variant = identifier(item.get("variant_id"), "item.variant_id", required=False)
        order = IncomingOrder(
            store=self.store,
            marketplace=self.marketplace,
            order_id=order_id,
            product_id=product_id,
            buyer_email=buyer,
            payload=order_payload(
                count, buyer, str(message.get("status") or "completed"), variant_id=variant, idempotency_key=key
            ),
        )
        return FulfilNow(order, self.budget)


class SellAuth:
    """The marketplace type, for the explicit list handed to the daemon."""

    name = "sellauth"

    def create(self, context: AdapterContext) -> SellAuthAdapter:
        return SellAuthAdapter(context)
