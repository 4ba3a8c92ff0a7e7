"""The Polar preset: the secret as Polar's dashboard shows it (and its whsec_ form), checked against the
standardwebhooks library the way Polar's SDK calls it; Polar's order body mapped onto the order and the refund."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest
import standardwebhooks

from delivery_daemon.clock import ManualClock
from delivery_daemon.config import parse_settings
from delivery_daemon.errors import ConfigError, WebhookRejected
from delivery_daemon.marketplaces.base import AdapterContext, OrderEvent
from delivery_daemon.marketplaces.polar import Polar, PolarAdapter, polar_key
from delivery_daemon.net.signatures import standard_headers
from delivery_daemon.order import IncomingOrder
from delivery_daemon.reference.polar import new_secret, order
from delivery_daemon.reference.standard_webhooks import new_secret as new_whsec

NOW = 1_800_000_000
WEBHOOK = {"channel": "webhook", "webhook": {"url": "http://127.0.0.1:9/x", "secret": new_whsec()}}


def adapter(secret: str) -> PolarAdapter:
    document = {"name": "p", "marketplace": "polar", "webhook_secret": secret, "delivery": WEBHOOK}
    settings = parse_settings({"stores": [document]}, environ={})
    context = AdapterContext(settings.stores[0], "stores[0]", ManualClock(NOW), settings.delivery)
    return Polar().create(context)


def polar_signed(secret: str, message: dict[str, Any], msg_id: str = "msg_1") -> tuple[dict[str, str], bytes]:
    """Signed as Polar signs: Standard Webhooks keyed with the base64 of the secret's text, as its SDK does."""
    body = json.dumps(message).encode()
    library = standardwebhooks.Webhook(base64.b64encode(secret.encode()).decode())
    signature = library.sign(msg_id, datetime.fromtimestamp(NOW, tz=UTC), body.decode())
    return {"webhook-id": msg_id, "webhook-timestamp": str(NOW), "webhook-signature": signature}, body


def test_the_dashboard_secret_as_shown_verifies_what_polar_signs() -> None:
    """A webhook signed the way Polar's SDK verifies (base64 of the text as a whsec key) passes with the secret
    configured exactly as the dashboard shows it, and with its whsec_ form; another secret is 403."""
    secret = new_secret()
    message = {"type": "order.paid", "data": order("prod-1")}
    headers, body = polar_signed(secret, message)
    for configured in (secret, "whsec_" + base64.b64encode(secret.encode()).decode()):
        assert isinstance(adapter(configured).parse_webhook(headers, body), IncomingOrder)
    with pytest.raises(WebhookRejected) as refused:
        adapter(new_secret()).parse_webhook(headers, body)
    assert refused.value.status == 403


def test_key_forms() -> None:
    """polar_key: the text's bytes; a whsec_ value decoded; under 16 characters refused."""
    assert polar_key("polar_whs_abcdefghijklmnop") == b"polar_whs_abcdefghijklmnop"
    assert polar_key("whsec_" + base64.b64encode(b"k" * 20).decode()) == b"k" * 20
    with pytest.raises(ValueError, match="shorter than 16"):
        polar_key("short")


@pytest.mark.parametrize("secret", ["short", "whsec_***"])
def test_bad_secret_is_a_config_error_naming_the_key(secret: str) -> None:
    """A too-short secret, or a whsec_ value that is not base64, fails with the key path and the expected form."""
    with pytest.raises(ConfigError, match=r"^stores\[0\]\.webhook_secret: "):
        adapter(secret)


def test_order_paid_maps_polar_fields() -> None:
    """data.id, data.product_id (else data.product.id), data.customer.email (else data.user.email), quantity 1."""
    secret = new_secret()
    data = order("prod-9", "c@example.org")
    result = adapter(secret).parse_webhook(*polar_signed(secret, {"type": "order.paid", "data": data}))
    assert isinstance(result, IncomingOrder)
    assert (result.order_id, result.product_id, result.buyer_email) == (data["id"], "prod-9", "c@example.org")
    assert result.payload["quantity"] == 1 and result.event_id == "msg_1"
    older = {"id": "o-2", "product": {"id": "prod-3"}, "user": {"email": "u@example.org"}}
    result = adapter(secret).parse_webhook(*polar_signed(secret, {"type": "order.paid", "data": older}))
    assert isinstance(result, IncomingOrder)
    assert (result.product_id, result.buyer_email) == ("prod-3", "u@example.org")


def test_refund_and_other_types() -> None:
    """order.refunded is a refund event; order.created, subscription events and a body without an id are ignored."""
    secret = new_secret()
    data = order("prod-1", status="refunded")
    event = adapter(secret).parse_webhook(*polar_signed(secret, {"type": "order.refunded", "data": data}))
    assert isinstance(event, OrderEvent) and event.kind == "refunded" and event.order_id == data["id"]
    for kind in ("order.created", "subscription.active"):
        assert adapter(secret).parse_webhook(*polar_signed(secret, {"type": kind, "data": {}})) is None
    with pytest.raises(WebhookRejected, match=r"missing field: data\.id"):
        adapter(secret).parse_webhook(*polar_signed(secret, {"type": "order.paid", "data": {}}))


def test_reference_sender_signs_as_polar() -> None:
    """The reference sender's headers verify with the library given the base64 of the secret, as Polar's SDK does."""
    secret = new_secret()
    body = b'{"type":"order.paid","data":{}}'
    headers = standard_headers(secret.encode(), "msg_9", NOW, body)
    library = standardwebhooks.Webhook(base64.b64encode(secret.encode()).decode())
    assert headers["webhook-signature"] == library.sign("msg_9", datetime.fromtimestamp(NOW, tz=UTC), body.decode())
