"""The Gumroad adapter without a network: the URL token and seller_id checks, the Ping's fields, the resource
subscriptions mapped to refund / dispute, the ignored ones, and the settings it requires."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest

from delivery_daemon.clock import ManualClock
from delivery_daemon.config import parse_settings
from delivery_daemon.errors import ConfigError, WebhookRejected
from delivery_daemon.marketplaces.base import AdapterContext, OrderEvent
from delivery_daemon.marketplaces.gumroad import Gumroad, GumroadApiAdapter
from delivery_daemon.marketplaces.gumroad_ping import GumroadAdapter
from delivery_daemon.marketplaces.listing import OrderListing
from delivery_daemon.marketplaces.optional import UrlAuthenticated
from delivery_daemon.order import IncomingOrder
from delivery_daemon.reference.gumroad import GumroadApi, ping_form

TOKEN = "t" * 24
SELLER = "A-m3CDDC5dlrSdKZp0RFhA=="


def adapter(**store: Any) -> GumroadAdapter:
    settings = parse_settings(
        {
            "stores": [
                {
                    "name": "g",
                    "marketplace": "gumroad",
                    "webhook_secret": TOKEN,
                    "seller_id": SELLER,
                    "delivery": {"channel": "email", "email": {"host": "smtp.example", "sender": "a@b.c"}},
                    "default": {"generator": "pattern"},
                    **store,
                }
            ]
        },
        environ={},
    )
    context = AdapterContext(
        store=settings.stores[0], path="stores[0]", clock=ManualClock(), delivery=settings.delivery
    )
    return Gumroad().create(context)


def form(resource: str | None = None, **changes: Any) -> bytes:
    sale = GumroadApi().sell("pencil", 2, "carol@example.org", product_id="prod==")
    return urlencode(ping_form(sale, resource) | changes).encode()


def parse(body: bytes, token: str | None = TOKEN) -> Any:
    query = {} if token is None else {"token": token}
    return adapter().parse_request({}, query, body)


def test_a_ping_becomes_an_order() -> None:
    """sale_id is the order, the permalink the product, quantity and email as sent; Gumroad's product id is kept."""
    order = parse(form())
    assert isinstance(order, IncomingOrder)
    assert order.product_id == "pencil" and order.buyer_email == "carol@example.org"
    assert order.order_id.endswith("==") and order.payload["quantity"] == 2
    assert order.payload["gumroad_product_id"] == "prod=="


def test_product_from_the_permalink_url() -> None:
    """Without ``permalink`` the product is the last segment of ``product_permalink``."""
    body = urlencode({k: v for k, v in ping_form(GumroadApi().sell("brush")).items() if k != "permalink"}).encode()
    order = parse(body)
    assert isinstance(order, IncomingOrder) and order.product_id == "brush"


@pytest.mark.parametrize(
    ("token", "reason"), [(None, "missing token"), ("x" * 24, "invalid token"), ("ü" * 24, "invalid token")]
)
def test_the_token_is_checked_first(token: str | None, reason: str) -> None:
    """No token, a wrong one, or a non-ASCII one: 403 naming the parameter, never the value."""
    with pytest.raises(WebhookRejected) as info:
        parse(b"not even a form \xff", token)
    assert (info.value.status, info.value.reason) == (403, reason)


def test_parse_webhook_without_the_query_is_refused() -> None:
    """The Marketplace entry point (no URL query) cannot authenticate a Ping: 403."""
    with pytest.raises(WebhookRejected) as info:
        adapter().parse_webhook({}, form())
    assert info.value.status == 403
    assert isinstance(adapter(), UrlAuthenticated)


@pytest.mark.parametrize(("changes", "status"), [({"seller_id": "other=="}, 403), ({"seller_id": ""}, 403)])
def test_another_seller_is_refused(changes: dict[str, str], status: int) -> None:
    """A Ping for another (or no) seller_id is 403 even with the right token."""
    with pytest.raises(WebhookRejected) as info:
        parse(form(**changes))
    assert info.value.status == status


def test_bad_bodies() -> None:
    """Bytes that are not UTF-8 are 400; a sale id Gumroad would not send is 422."""
    with pytest.raises(WebhookRejected) as info:
        parse(b"seller_id=\xff")
    assert info.value.status == 400
    with pytest.raises(WebhookRejected) as info:
        parse(form(sale_id="a b"))
    assert info.value.status == 422


def test_resource_subscriptions() -> None:
    """refund and dispute mark the sale; dispute_won, cancellation and test sales ask nothing."""
    refund = parse(form("refund"))
    dispute = parse(form("dispute"))
    assert isinstance(refund, OrderEvent) and refund.kind == "refunded" and refund.product_id == "pencil"
    assert isinstance(dispute, OrderEvent) and dispute.kind == "disputed"
    for ignored in ("dispute_won", "cancellation", "subscription_updated"):
        assert parse(form(ignored)) is None
    assert parse(form(test="true")) is None


def test_settings_required_and_secrets() -> None:
    """seller_id and a token of 16+ characters are required; the token and the access token go to the redactor."""
    with pytest.raises(ConfigError) as info:
        adapter(seller_id=None)
    assert info.value.path == "stores[0].seller_id"
    with pytest.raises(ConfigError) as info:
        adapter(webhook_secret="short")
    assert info.value.path == "stores[0].webhook_secret"
    plain = adapter()
    assert not isinstance(plain, OrderListing) and plain.secrets() == [TOKEN]
    with_api = adapter(api_key="access-token-123456")
    assert isinstance(with_api, GumroadApiAdapter) and isinstance(with_api, OrderListing)
    assert set(with_api.secrets()) == {TOKEN, "access-token-123456"}
