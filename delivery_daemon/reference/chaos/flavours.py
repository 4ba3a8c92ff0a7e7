"""How each webhook-only marketplace of the chaos run (:mod:`.webhooks`) words and signs a paid-order webhook.

A resend is the same body (the same event), signed again where the signature carries a timestamp, as the
marketplaces do.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from delivery_daemon.config import whsec_key
from delivery_daemon.net.signatures import hex_hmac, standard_headers, stripe_header
from delivery_daemon.reference.chaos import lemonsqueezy as ls
from delivery_daemon.reference.chaos.lemonsqueezy import OrdersApi
from delivery_daemon.reference.sellix import order as sellix_order
from delivery_daemon.reference.shoppy import order as shoppy_order
from delivery_daemon.reference.standard_webhooks import new_secret
from delivery_daemon.reference.stripe_store import event as stripe_event
from delivery_daemon.reference.stripe_store import payment_intent


@dataclass(frozen=True)
class Flavour:
    """One marketplace's paid-order webhook: ``name`` is its ``marketplace`` in the daemon's config."""

    name: str
    new_secret: Callable[[], str]
    new_order_id: Callable[[], str]
    message: Callable[[str, str, int], dict[str, Any]]  # (order id, product id, quantity) -> the webhook body
    sign: Callable[[str, str, bytes], dict[str, str]]  # (secret, order id, body) -> signature headers
    api: Callable[[str], OrdersApi] | None = None  # the orders API the daemon reads back from, built with the secret


def _sellix_sign(secret: str, _order_id: str, body: bytes) -> dict[str, str]:
    return {"X-Sellix-Signature": hex_hmac(secret.encode(), body, "sha512"), "X-Sellix-Event": "order:paid"}


def _shoppy_sign(secret: str, _order_id: str, body: bytes) -> dict[str, str]:
    return {"X-Shoppy-Signature": hex_hmac(secret.encode(), body, "sha512")}


def _stripe_sign(secret: str, _order_id: str, body: bytes) -> dict[str, str]:
    return {"Stripe-Signature": stripe_header([secret], body, int(time.time()))}


def _standard_sign(secret: str, order_id: str, body: bytes) -> dict[str, str]:
    # webhook-id is the dedup key: a resend of the same order carries the same id, as the specification says.
    return standard_headers(whsec_key(secret), f"msg_{order_id}", int(time.time()), body)


FLAVOURS: dict[str, Flavour] = {
    "sellix": Flavour(
        "sellix",
        lambda: secrets.token_hex(24),
        lambda: f"sellix-{secrets.token_hex(6)}",
        lambda oid, product, qty: {"event": "order:paid", "data": sellix_order(product, qty, uniqid=oid)},
        _sellix_sign,
    ),
    "shoppy": Flavour(
        "shoppy",
        lambda: secrets.token_hex(24),
        lambda: secrets.token_hex(8),
        lambda oid, product, qty: {
            "status": True,
            "webhook_type": "100",
            "data": {"order": shoppy_order(product, qty, order_id=oid), "product": {}},
        },
        _shoppy_sign,
    ),
    "stripe": Flavour(
        "stripe",
        lambda: f"whsec_{secrets.token_hex(24)}",
        lambda: f"pi_{secrets.token_hex(12)}",
        lambda oid, product, qty: stripe_event(
            "payment_intent.succeeded",
            payment_intent(product, qty, pi_id=oid),
            event_id=f"evt_{oid.removeprefix('pi_')}",
        ),
        _stripe_sign,
    ),
    "lemonsqueezy": Flavour(*ls.FLAVOUR),
    "standard-webhooks": Flavour(
        "standard-webhooks",
        new_secret,
        lambda: f"A-{secrets.token_hex(6)}",
        lambda oid, product, qty: {
            "type": "order.paid",
            "data": {"order_id": oid, "product_id": product, "quantity": qty, "email": "buyer@example.org"},
        },
        _standard_sign,
    ),
}
