"""Lemon Squeezy's flavour of the webhook chaos run (:mod:`.webhooks`): its signature, and its orders API.

Unlike the other webhook-only marketplaces, the daemon reads every Lemon Squeezy order back from the API before it
makes the keys, so the run also serves the reference Lemon Squeezy's API (:class:`ChaosOrders`): each order the
marketplace side places is recorded there as paid, and its ``order_created`` body is the order resource. The faults
stay on the seller's endpoint; the API answers every request.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any, Protocol

from starlette.types import ASGIApp

from delivery_daemon.http.serving import serve
from delivery_daemon.net.signatures import hex_hmac
from delivery_daemon.reference.lemonsqueezy import LemonSqueezy, webhook_body


class OrdersApi(Protocol):
    """A marketplace's API the daemon asks about orders during a chaos run."""

    @property
    def app(self) -> ASGIApp: ...

    @property
    def secrets(self) -> set[str]: ...

    def message(self, order_id: str, product_id: str, quantity: int) -> dict[str, Any]:
        """Record a paid order and return its webhook's body."""
        ...

    def store(self, url: str) -> dict[str, Any]:
        """The store settings that point the daemon at the API served at ``url``."""
        ...


class ChaosOrders:
    """The reference Lemon Squeezy's API for a chaos run (:class:`OrdersApi`)."""

    def __init__(self, webhook_secret: str) -> None:
        self.market = LemonSqueezy(api_key=secrets.token_hex(20), secret=webhook_secret)

    @property
    def app(self) -> ASGIApp:
        return self.market.app

    @property
    def secrets(self) -> set[str]:
        return {self.market.api_key}

    def message(self, order_id: str, product_id: str, quantity: int) -> dict[str, Any]:
        self.market.place(product_id, quantity, order_id=order_id, send=False)
        body: dict[str, Any] = json.loads(webhook_body("order_created", self.market.orders[order_id]))
        return body

    def store(self, url: str) -> dict[str, Any]:
        return {"api_url": url, "api_key": self.market.api_key, "store_id": self.market.store_id}


def new_order_id() -> str:
    return str(secrets.randbelow(10**12) + 10**11)


def unplaced(_order_id: str, _product_id: str, _quantity: int) -> dict[str, Any]:
    """The flavour's ``message`` without an API: a Lemon Squeezy order is placed in one (:class:`ChaosOrders`)."""
    raise RuntimeError("a Lemon Squeezy chaos order is placed through ChaosOrders.message")


def sign(secret: str, _order_id: str, body: bytes) -> dict[str, str]:
    return {"X-Signature": hex_hmac(secret.encode(), body, "sha256"), "X-Event-Name": "order_created"}


def new_secret() -> str:
    return secrets.token_hex(16)


FLAVOUR = ("lemonsqueezy", new_secret, new_order_id, unplaced, sign, ChaosOrders)
"""The fields of its :class:`~delivery_daemon.reference.chaos.webhooks.Flavour`, in order."""


@contextlib.asynccontextmanager
async def serve_api(api: OrdersApi | None) -> AsyncIterator[dict[str, Any]]:
    """Serve ``api`` on loopback for the block, yielding the store settings that point at it ({} without one)."""
    if api is None:
        yield {}
        return
    async with serve(api.app) as running:
        yield api.store(running.url)
