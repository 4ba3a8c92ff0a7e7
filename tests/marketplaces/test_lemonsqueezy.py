"""The Lemon Squeezy adapter on its own: X-Signature on the raw bytes, the mapping of an order resource, events it
ignores, another store's orders, its configuration errors, and fetch_order against the reference API."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from typing import Any

import pytest

from delivery_daemon.clock import ManualClock
from delivery_daemon.config import parse_settings
from delivery_daemon.errors import ConfigError, Dead, Retry, WebhookRejected
from delivery_daemon.http.serving import serve
from delivery_daemon.marketplaces.base import AdapterContext, OrderEvent
from delivery_daemon.marketplaces.lemonsqueezy import LemonSqueezy, LemonSqueezyAdapter
from delivery_daemon.marketplaces.listing import OrderListing
from delivery_daemon.order import IncomingOrder
from delivery_daemon.reference.lemonsqueezy import LemonSqueezy as Market
from delivery_daemon.reference.lemonsqueezy import signed_headers, webhook_body
from delivery_daemon.reference.standard_webhooks import new_secret
from delivery_daemon.storage.models import Job

SECRET = "ls-signing-secret-1"
WEBHOOK = {"channel": "webhook", "webhook": {"url": "http://127.0.0.1:9/x", "secret": new_secret()}}


def adapter(api_url: Any = "http://127.0.0.1:9", **store: Any) -> LemonSqueezyAdapter:
    document = {
        "name": "ls",
        "marketplace": "lemonsqueezy",
        "api_url": api_url,
        "api_key": "ls-api-key",
        "store_id": 1001,
        "webhook_secret": SECRET,
        "delivery": WEBHOOK,
        "products": {"77:8": {"generator": "pattern"}},
        **store,
    }
    settings = parse_settings({"stores": [document]}, environ={})
    context = AdapterContext(settings.stores[0], "stores[0]", ManualClock(), settings.delivery)
    return LemonSqueezy().create(context)


def resource(**attributes: Any) -> dict[str, Any]:
    market = Market(api_key="k", secret=SECRET, now=ManualClock().now)
    order = copy.deepcopy(market.orders[market.place("55", 2, "ann@example.org", send=False)])
    order["attributes"].update(attributes)
    return order


def signed(event: str, data: dict[str, Any], secret: str = SECRET) -> tuple[dict[str, str], bytes]:
    body = webhook_body(event, data)
    return {k.lower(): v for k, v in signed_headers(secret, body, event).items()}, body


def test_signature_is_hex_hmac_sha256_of_the_raw_body() -> None:
    """A header computed independently with hmac/hashlib is accepted; upper-case hex too; one flipped byte is not."""
    body = webhook_body("order_created", resource())
    good = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert b"ann@" in body
    ls = adapter()
    assert isinstance(ls.parse_webhook({"x-signature": good}, body), IncomingOrder)
    assert isinstance(ls.parse_webhook({"x-signature": good.upper()}, body), IncomingOrder)
    for headers, tampered in (({"x-signature": good}, body.replace(b"ann@", b"eve@", 1)), ({}, body)):
        with pytest.raises(WebhookRejected) as refused:
            ls.parse_webhook(headers, tampered)
        assert refused.value.status == 403


def test_forged_with_another_secret_is_refused() -> None:
    """The same body signed with another secret is 403 "invalid signature"."""
    headers, body = signed("order_created", resource(), secret="someone-else")
    with pytest.raises(WebhookRejected, match="invalid signature"):
        adapter().parse_webhook(headers, body)


def test_order_created_maps_to_an_order() -> None:
    """Order id data.id, product first_order_item.product_id, quantity, buyer email; dedup key event:id."""
    data = resource()
    order = adapter().parse_webhook(*signed("order_created", data))
    assert isinstance(order, IncomingOrder)
    assert (order.order_id, order.product_id, order.buyer_email) == (data["id"], "55", "ann@example.org")
    assert order.payload == {"quantity": 2, "buyer_email": "ann@example.org", "status": "paid"}
    assert order.event_id == f"order_created:{data['id']}"


def test_a_variant_configured_on_its_own_is_its_product() -> None:
    """first_order_item 77/8 with products["77:8"] configured is product "77:8"; 77/9 is product "77"."""
    item = resource()["attributes"]["first_order_item"]
    for variant, expected in ((8, "77:8"), (9, "77")):
        data = resource(first_order_item={**item, "product_id": 77, "variant_id": variant})
        order = adapter().parse_webhook(*signed("order_created", data))
        assert isinstance(order, IncomingOrder) and order.product_id == expected


def test_refund_event_and_ignored_events() -> None:
    """order_refunded is a refund event; a pending order_created and other events are ignored (None)."""
    data = resource(status="refunded")
    event = adapter().parse_webhook(*signed("order_refunded", data))
    assert isinstance(event, OrderEvent) and event.kind == "refunded" and event.order_id == data["id"]
    assert adapter().parse_webhook(*signed("order_created", resource(status="pending"))) is None
    assert adapter().parse_webhook(*signed("subscription_created", resource())) is None


def test_the_signed_event_name_wins_over_the_header() -> None:
    """X-Event-Name is not signed: a header saying order_refunded on a signed order_created body is an order."""
    headers, body = signed("order_created", resource())
    assert isinstance(adapter().parse_webhook({**headers, "x-event-name": "order_refunded"}, body), IncomingOrder)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"store_id": 999}, "store_id is not this store's"),
        ({"first_order_item": {"variant_id": 1}}, r"missing field: data\.attributes\.first_order_item\.product_id"),
        ({"first_order_item": {"product_id": 5, "quantity": 0}}, "quantity must be a positive integer"),
    ],
)
def test_unusable_orders_are_422(change: dict[str, Any], reason: str) -> None:
    """Another store's order, an item without product, a zero quantity: 422 naming the field."""
    with pytest.raises(WebhookRejected, match=reason) as refused:
        adapter().parse_webhook(*signed("order_created", resource(**change)))
    assert refused.value.status == 422


def test_not_an_order_resource_is_422() -> None:
    """data.type other than orders is refused."""
    data = {**resource(), "type": "subscriptions"}
    with pytest.raises(WebhookRejected, match=r"data\.type must be orders"):
        adapter().parse_webhook(*signed("order_created", data))


@pytest.mark.parametrize("missing", ["webhook_secret", "api_key", "store_id"])
def test_missing_setting_is_a_config_error_naming_it(missing: str) -> None:
    """Each of the three settings the adapter needs is required, named by its key path."""
    with pytest.raises(ConfigError, match=rf"^stores\[0\]\.{missing}: required"):
        adapter(**{missing: None, "api_url": "http://127.0.0.1:9"})


def test_it_lists_orders_for_the_watchdog_and_hides_its_secrets() -> None:
    """The adapter implements OrderListing; its secrets are the signing secret and the API key."""
    ls = adapter()
    assert isinstance(ls, OrderListing) and set(ls.secrets()) == {SECRET, "ls-api-key"}


def job(order_id: str, product_id: str = "55") -> Job:
    return Job(
        store="ls",
        order_id=order_id,
        marketplace="lemonsqueezy",
        product_id=product_id,
        payload="{}",
        due_at=0,
        created_at=0,
        updated_at=0,
    )


async def test_fetch_order_reads_the_api() -> None:
    """fetch_order: paid with the API's quantity; refunded is not paid; pending retried; unknown dead; a wrong key
    retried (never dead: the seller fixes the key and the order still goes out)."""
    market = Market(api_key="ls-api-key", secret=SECRET, now=ManualClock().now)
    paid = market.place("55", 3, send=False)
    refunded = market.place("55", send=False)
    market.refund(refunded)
    pending = market.place("55", status="pending", send=False)
    async with serve(market.app) as api:
        ls = adapter(api.url)
        try:
            order = await ls.fetch_order(job(paid))
            assert order.paid and order.quantity == 3 and order.buyer_email == "buyer@example.org"
            assert not (await ls.fetch_order(job(refunded))).paid
            with pytest.raises(Retry, match="pending"):
                await ls.fetch_order(job(pending))
            with pytest.raises(Dead, match="not found"):
                await ls.fetch_order(job("424242"))
        finally:
            await ls.aclose()
        wrong = adapter(api.url, api_key="another-key")
        try:
            with pytest.raises(Retry, match="refused the API key"):
                await wrong.fetch_order(job(paid))
        finally:
            await wrong.aclose()
    assert json.loads(json.dumps(market.requests))[0][0] == f"/v1/orders/{paid}"
