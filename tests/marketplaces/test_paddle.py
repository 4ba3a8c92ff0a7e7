"""Paddle Billing and Paddle Classic adapters without sockets: Paddle-Signature (rotation, tolerance), p_signature
(PHP serialisation, RSA-SHA1), and how transactions and adjustments map onto orders and events."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any
from urllib.parse import urlencode

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from delivery_daemon.clock import ManualClock
from delivery_daemon.errors import ConfigError, WebhookRejected
from delivery_daemon.marketplaces.base import FulfilNow, OrderEvent
from delivery_daemon.marketplaces.optional import accepted_body
from delivery_daemon.net.classic_signature import php_serialise, sign_fields, signed_text, verify_fields
from delivery_daemon.net.signatures import paddle_header, verify_paddle
from delivery_daemon.order import IncomingOrder
from delivery_daemon.reference.paddle import ClassicVendor, adjustment, event, line
from tests.support.multistore import store_adapter

SECRET = "pdl_ntfset_01gkpjp8bkm3tm53kdgkx6sms7_6h3qd3uFSi9YCD3OLYAShQI90XTI5vEI"
BODY = b'{"event_id":"evt_1","event_type":"transaction.completed"}'
NOW = 1_800_000_000


def adapter(marketplace: str, secret: str, **store: Any) -> Any:
    """The adapter of a ``marketplace`` store with ``store``'s extra settings, on a ManualClock at NOW."""
    return store_adapter(marketplace, secret, ManualClock(NOW), **store)


def billing(**store: Any) -> Any:
    return adapter("paddle", SECRET, api_url="http://127.0.0.1:9", api_key="pdl_apikey_test", **store)


def signed(message: dict[str, Any], secrets: list[str] | None = None, ts: int = NOW) -> tuple[dict[str, str], bytes]:
    body = json.dumps(message).encode()
    return {"paddle-signature": paddle_header(secrets or [SECRET], body, ts)}, body


# -- Paddle-Signature ---------------------------------------------------------------------------------------------


def test_header_is_the_documented_hmac_of_ts_colon_body() -> None:
    """h1 is hex HMAC-SHA256 of "{ts}:{body}" with the secret's UTF-8 bytes, as Paddle's docs and SDK compute it."""
    expected = hmac.new(SECRET.encode(), f"{NOW}:".encode() + BODY, hashlib.sha256).hexdigest()
    assert paddle_header([SECRET], BODY, NOW) == f"ts={NOW};h1={expected}"
    assert verify_paddle(f"ts={NOW};h1={expected}", BODY, SECRET, NOW, 300) == NOW


def test_any_h1_may_match_during_rotation() -> None:
    """With two h1 values (old and new secret) either secret verifies; a third secret does not."""
    header = paddle_header(["pdl_ntfset_old", SECRET], BODY, NOW)
    assert header.count("h1=") == 2
    verify_paddle(header, BODY, SECRET, NOW, 300)
    verify_paddle(header, BODY, "pdl_ntfset_old", NOW, 300)
    with pytest.raises(WebhookRejected, match="invalid signature"):
        verify_paddle(header, BODY, "pdl_ntfset_other", NOW, 300)


@pytest.mark.parametrize("skew", [-301, 301])
def test_timestamp_outside_tolerance_both_ways_is_refused(skew: int) -> None:
    """A signature 301 s old or 301 s ahead is refused (403, "tolerance"); 300 s either way is accepted."""
    header = paddle_header([SECRET], BODY, NOW)
    with pytest.raises(WebhookRejected, match="tolerance") as info:
        verify_paddle(header, BODY, SECRET, NOW - skew, 300)
    assert info.value.status == 403
    verify_paddle(header, BODY, SECRET, NOW + (300 if skew > 0 else -300), 300)


@pytest.mark.parametrize(
    ("header", "status"),
    [(None, 403), ("", 403), ("ts=1800000000", 403), ("h1=abc", 403), ("ts=soon;h1=abc", 400), ("ts=1;h1=é", 403)],
)
def test_unusable_headers_are_refused_without_a_500(header: str | None, status: int) -> None:
    """Missing parts answer 403, an unreadable timestamp 400, a non-ASCII signature 403 (never a TypeError)."""
    with pytest.raises(WebhookRejected) as info:
        verify_paddle(header, BODY, SECRET, NOW, 300)
    assert info.value.status == status


def test_tampered_body_is_refused() -> None:
    """One byte more in the body and the signature no longer matches."""
    with pytest.raises(WebhookRejected, match="invalid signature"):
        verify_paddle(paddle_header([SECRET], BODY, NOW), BODY + b" ", SECRET, NOW, 300)


# -- Billing mapping ----------------------------------------------------------------------------------------------


def transaction(items: list[dict[str, Any]], txn: str = "txn_01abc") -> dict[str, Any]:
    return {"id": txn, "status": "completed", "customer_id": "ctm_01x", "items": items}


def test_completed_transaction_picks_the_configured_line() -> None:
    """The first line whose product (or price) id is configured is the order; its quantity is the line's."""
    market = billing(products={"pro_keys": {"generator": "pattern"}, "pri_seat": {"generator": "pattern"}})
    items = [line("pro_other", 9), line("pro_keys", 3)]
    result = market.parse_webhook(*signed(event("transaction.completed", transaction(items), "evt_01a")))
    assert isinstance(result, IncomingOrder)
    assert (result.order_id, result.product_id, result.event_id) == ("txn_01abc", "pro_keys", "evt_01a")
    assert result.payload["quantity"] == 3 and result.buyer_email is None
    by_price = market.parse_webhook(
        *signed(event("transaction.completed", transaction([line("pro_x", 2, "pri_seat")])))
    )
    assert by_price.product_id == "pri_seat" and by_price.payload["quantity"] == 2


def test_unconfigured_line_falls_back_to_the_first_product() -> None:
    """Without a configured line, the first line's product id is the order's (the store's default then applies)."""
    result = billing().parse_webhook(*signed(event("transaction.completed", transaction([line("pro_a", 1)]))))
    assert result.product_id == "pro_a"


@pytest.mark.parametrize(
    ("action", "status", "kind"),
    [
        ("refund", "approved", "refunded"),
        ("chargeback", "approved", "disputed"),
        ("chargeback_warning", "approved", "disputed"),
    ],
)
def test_adjustments_map_to_refund_and_dispute(action: str, status: str, kind: str) -> None:
    """An approved refund is "refunded"; a chargeback (or its warning) is "disputed"; both name the transaction."""
    for name in ("adjustment.created", "adjustment.updated"):
        result = billing().parse_webhook(*signed(event(name, adjustment("txn_01abc", action, status), "evt_01b")))
        assert isinstance(result, OrderEvent)
        assert (result.order_id, result.kind, result.event_id) == ("txn_01abc", kind, "evt_01b")


@pytest.mark.parametrize(
    ("action", "status"), [("refund", "pending_approval"), ("refund", "rejected"), ("credit", "approved")]
)
def test_pending_rejected_and_credit_adjustments_are_ignored(action: str, status: str) -> None:
    """A refund not approved (yet) and a credit change nothing."""
    assert billing().parse_webhook(*signed(event("adjustment.created", adjustment("txn_1", action, status)))) is None


def test_other_events_are_ignored_and_bad_transactions_refused() -> None:
    """transaction.paid is ignored; a completed transaction without items is 422."""
    assert billing().parse_webhook(*signed(event("transaction.paid", transaction([line("pro_a")])))) is None
    with pytest.raises(WebhookRejected) as info:
        billing().parse_webhook(*signed(event("transaction.completed", transaction([]))))
    assert info.value.status == 422


def test_billing_store_needs_an_api_key() -> None:
    """Without api_key the store is refused naming stores[0].api_key."""
    with pytest.raises(ConfigError, match=r"stores\[0\]\.api_key"):
        adapter("paddle", SECRET)


# -- Paddle Classic ---------------------------------------------------------------------------------------------


def test_php_serialisation_is_what_php_writes() -> None:
    """serialize(['a'=>'b','é'=>'xy']) in PHP: byte lengths, quoted strings, one array."""
    assert php_serialise({"a": "b", "é": "xy"}) == 'a:2:{s:1:"a";s:1:"b";s:2:"é";s:2:"xy";}'.encode()
    assert php_serialise({}) == b"a:0:{}"


def test_signed_text_sorts_and_leaves_out_the_signature() -> None:
    """The signed text is the fields sorted by name, without p_signature."""
    text = signed_text({"p_signature": "x", "b": "2", "a": "1"})
    assert text == b'a:2:{s:1:"a";s:1:"1";s:1:"b";s:1:"2";}'


def test_p_signature_is_rsa_sha1_over_the_serialised_fields() -> None:
    """The reference's p_signature verifies with cryptography directly; a changed field or key is refused."""
    key = rsa.generate_private_key(65537, 2048)
    fields = {"p_order_id": "42", "p_product_id": "7", "p_quantity": "2"}
    fields["p_signature"] = sign_fields(key, fields)
    raw = base64.b64decode(fields["p_signature"])
    key.public_key().verify(raw, signed_text(fields), padding.PKCS1v15(), hashes.SHA1())  # noqa: S303 (Paddle's scheme, not our choice)
    verify_fields(key.public_key(), fields)
    with pytest.raises(WebhookRejected, match="invalid signature"):
        verify_fields(key.public_key(), {**fields, "p_quantity": "20"})
    with pytest.raises(WebhookRejected, match="invalid signature"):
        verify_fields(rsa.generate_private_key(65537, 2048).public_key(), fields)
    with pytest.raises(WebhookRejected, match="base64"):
        verify_fields(key.public_key(), {**fields, "p_signature": "not base64!"})


def test_classic_fulfilment_is_answered_synchronously() -> None:
    """A signed fulfilment request is a FulfilNow for p_order_id / p_product_id / p_quantity with the email field."""
    vendor = ClassicVendor("http://unused")
    market = adapter("paddle-classic", vendor.public_pem, sync_budget=4)
    fields = vendor.fields("7", quantity=3, email="ann@example.org", order_id="123")
    result = market.parse_webhook({}, urlencode(fields).encode())
    assert isinstance(result, FulfilNow) and result.budget == 4
    order = result.order
    assert (order.order_id, order.product_id, order.buyer_email, order.payload["quantity"]) == (
        "123",
        "7",
        "ann@example.org",
        3,
    )
    assert accepted_body(market, "application/x-www-form-urlencoded") is None
    assert accepted_body(market, "application/json") == "application/x-www-form-urlencoded"
    assert accepted_body(billing(), "application/json") is None


@pytest.mark.parametrize("body", [b"a=1&a=2", b"\xff=1", b"p_order_id=1"])
def test_classic_refuses_repeated_unreadable_or_unsigned_forms(body: bytes) -> None:
    """A repeated field or non-UTF-8 body is 400; a form without p_signature is 403."""
    market = adapter("paddle-classic", ClassicVendor("http://unused").public_pem)
    with pytest.raises(WebhookRejected) as info:
        market.parse_webhook({}, body)
    assert info.value.status in (400, 403)


def test_classic_store_needs_a_pem_public_key() -> None:
    """A webhook_secret that is not an RSA public key is a config error naming the key and the expected form."""
    with pytest.raises(ConfigError, match=r"stores\[0\]\.webhook_secret: not a PEM public key; expected"):
        adapter("paddle-classic", "just-a-secret")
