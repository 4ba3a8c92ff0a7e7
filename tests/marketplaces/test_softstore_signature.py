"""SoftStore webhook signatures: the documented formula, and how ``parse_webhook`` compares what was sent."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from delivery_daemon.clock import ManualClock
from delivery_daemon.config import DeliverySettings, StoreSettings
from delivery_daemon.errors import WebhookRejected
from delivery_daemon.marketplaces.base import AdapterContext
from delivery_daemon.marketplaces.softstore import SoftStoreAdapter, signature

API_KEY = "YOUR_SECRET_API_KEY"  # the placeholder of the document's PHP example
DOC_ORDER = "030a3c6f15f2744e58f2e24fd40d3466"  # id_order of the document's webhook example
API_URL = "https://api.softstore.app/api/v1"


def independent_signature(api_key: str, order_id: str) -> str:
    """The document's PHP ``sha1(sha1($apiKey) . $payload['id_order'])``, written out step by step."""
    inner = hashlib.new("sha1", api_key.encode("utf-8")).hexdigest()
    return hashlib.new("sha1", (inner + order_id).encode("utf-8")).hexdigest()


@pytest.fixture
async def adapter() -> Any:
    store = StoreSettings.model_validate(
        {"name": "shop", "marketplace": "softstore", "api_url": API_URL, "api_key": API_KEY}
    )
    built = SoftStoreAdapter(
        AdapterContext(store=store, path="stores[0]", clock=ManualClock(), delivery=DeliverySettings())
    )
    yield built
    await built.aclose()


def body(**fields: Any) -> bytes:
    data = {
        "id_order": DOC_ORDER,
        "id_product": "69f36497dc78f",
        "payment_status": "paid",
        "signature": signature(API_KEY, DOC_ORDER),
        "delivery_url": f"{API_URL}/orders/delivery/TOKEN",
        "token": "d487c01d834dcb296c4f",
    }
    data.update(fields)
    return json.dumps({k: v for k, v in data.items() if v is not None}).encode()


def test_signature_matches_document_formula() -> None:
    """``signature`` is sha1 of (lowercase hex sha1 of the key) + id_order, as the document's example."""
    assert signature(API_KEY, DOC_ORDER) == independent_signature(API_KEY, DOC_ORDER)
    # Pinned by hand so that a change to both the code and the helper above is still caught.
    assert signature(API_KEY, DOC_ORDER) == "b5ae91a313a667ae0da756c2f5132920207e94d7"


def test_valid_signature_is_accepted(adapter: SoftStoreAdapter) -> None:
    """A webhook signed with the store's key becomes an IncomingOrder carrying delivery_url and token."""
    order = adapter.parse_webhook({}, body())
    assert order is not None
    assert (order.store, order.order_id, order.product_id) == ("shop", DOC_ORDER, "69f36497dc78f")
    assert order.payload["delivery_url"] == f"{API_URL}/orders/delivery/TOKEN"


def test_wrong_signature_is_403(adapter: SoftStoreAdapter) -> None:
    """A signature made with another key is refused with 403."""
    with pytest.raises(WebhookRejected) as caught:
        adapter.parse_webhook({}, body(signature=independent_signature("other-key", DOC_ORDER)))
    assert caught.value.status == 403


def test_signature_for_another_order_is_403(adapter: SoftStoreAdapter) -> None:
    """A valid signature of a different order cannot be replayed on this order id."""
    with pytest.raises(WebhookRejected) as caught:
        adapter.parse_webhook({}, body(signature=signature(API_KEY, "another-order")))
    assert caught.value.status == 403


def test_uppercase_hex_signature_is_accepted(adapter: SoftStoreAdapter) -> None:
    """Hex case carries no information: the right digest in uppercase is the same signature."""
    assert adapter.parse_webhook({}, body(signature=signature(API_KEY, DOC_ORDER).upper())) is not None


def test_missing_signature_is_400(adapter: SoftStoreAdapter) -> None:
    """A webhook without a signature field is refused as malformed."""
    with pytest.raises(WebhookRejected) as caught:
        adapter.parse_webhook({}, body(signature=None))
    assert caught.value.status == 400
    assert "signature" in caught.value.reason


@pytest.mark.parametrize("sent", ["ß" * 40, "é", "\u0130" * 40], ids=["sharp-s", "e-acute", "dotted-I"])
def test_non_ascii_signature_is_403_not_a_crash(adapter: SoftStoreAdapter, sent: str) -> None:
    """A non-ASCII signature is a wrong signature (403), not a TypeError from the constant-time compare."""
    with pytest.raises(WebhookRejected) as caught:
        adapter.parse_webhook({}, body(signature=sent))
    assert caught.value.status == 403
