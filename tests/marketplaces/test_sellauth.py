"""The SellAuth adapter without a network: X-Signature over the raw bytes only, one order per invoice item, the
Idempotency-Key as the order when the item has no id, and events other than dynamic delivery ignored."""

from __future__ import annotations

import json
from typing import Any

import pytest

from delivery_daemon.clock import ManualClock
from delivery_daemon.config import parse_settings
from delivery_daemon.errors import WebhookRejected
from delivery_daemon.marketplaces.base import AdapterContext, FulfilNow
from delivery_daemon.marketplaces.sellauth import SellAuth, SellAuthAdapter
from delivery_daemon.net.signatures import hex_hmac
from delivery_daemon.reference.sellauth import SellAuthSender, invoice_item

SECRET = "sellauth-secret"


def adapter() -> SellAuthAdapter:
    settings = parse_settings(
        {
            "stores": [
                {
                    "name": "a",
                    "marketplace": "sellauth",
                    "webhook_secret": SECRET,
                    "sync_budget": 8,
                    "delivery": {"channel": "email", "email": {"host": "smtp.example", "sender": "a@b.c"}},
                    "default": {"generator": "pattern"},
                }
            ]
        },
        environ={},
    )
    return SellAuth().create(
        AdapterContext(store=settings.stores[0], path="stores[0]", clock=ManualClock(), delivery=settings.delivery)
    )


def signed(message: dict[str, Any], key: str = "k" * 64) -> tuple[dict[str, str], bytes]:
    body = SellAuthSender("http://unused", SECRET).encode(message)
    headers = {"x-signature": hex_hmac(SECRET.encode(), body, "sha256"), "idempotency-key": key}
    return headers, body


def test_an_item_is_fulfilled_now() -> None:
    """The item becomes a synchronous order: id ``{invoice}-{item}``, product, quantity, variant, the store's budget."""
    message = invoice_item(77, 3, invoice_id=10042, item_id=5, variant_id=9)
    result = adapter().parse_webhook(*signed(message))
    assert isinstance(result, FulfilNow) and result.budget == 8
    order = result.order
    assert (order.order_id, order.product_id, order.payload["quantity"]) == ("10042-5", "77", 3)
    assert order.payload["variant_id"] == "9" and order.payload["idempotency_key"] == "k" * 64
    assert order.buyer_email == "john.doe@example.com"


def test_without_item_id_the_idempotency_key_names_the_order() -> None:
    """No item.id: the order is ``key-`` and the Idempotency-Key; neither is 422."""
    message = invoice_item(77)
    del message["item"]["id"]
    result = adapter().parse_webhook(*signed(message, "abc"))
    assert isinstance(result, FulfilNow) and result.order.order_id == "key-abc"
    headers, body = signed(message)
    del headers["idempotency-key"]
    with pytest.raises(WebhookRejected) as info:
        adapter().parse_webhook(headers, body)
    assert info.value.status == 422


def test_signature_is_over_the_raw_bytes_only() -> None:
    """A body re-serialised after signing (same JSON, other bytes) is 403: no re-encoded fallback; so is no header."""
    message = invoice_item(77)
    headers, body = signed(message)
    spaced = json.dumps(json.loads(body)).encode()
    assert spaced != body
    with pytest.raises(WebhookRejected) as info:
        adapter().parse_webhook(headers, spaced)
    assert (info.value.status, info.value.reason) == (403, "invalid signature")
    with pytest.raises(WebhookRejected) as info:
        adapter().parse_webhook({}, body)
    assert info.value.status == 403


def test_bad_idempotency_key_and_other_events() -> None:
    """An Idempotency-Key that could not be stored is 400; a notification is ignored."""
    with pytest.raises(WebhookRejected) as info:
        adapter().parse_webhook(*signed(invoice_item(77), "bad key"))
    assert info.value.status == 400
    note = {"event": "NOTIFICATION.SHOP_INVOICE_CREATED", "data": {"invoice_id": 1}, "shop_id": 1}
    assert adapter().parse_webhook(*signed(note)) is None
