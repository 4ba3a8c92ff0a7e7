"""``delivery-daemon demo --marketplace paddle``: the webhook demo (:mod:`.demo_webhooks`) for Paddle Billing, whose
adapter also reads each transaction back from Paddle's API: the reference Paddle's API
(:class:`~delivery_daemon.reference.paddle.PaddleBilling`) is served on loopback for it, and each order is a
transaction placed there, then notified as ``transaction.completed``. The buyer's email comes from that API (the
webhook has none), so the keys go by email through the local SMTP sink when ``aiosmtpd`` is installed.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import TextIO

import httpx

from delivery_daemon.http.serving import serve
from delivery_daemon.reference.demo_webhooks import Market, Place, run_webhook_demo
from delivery_daemon.reference.paddle import PaddleBilling, PaddleSender


def _placer(billing: PaddleBilling) -> Callable[[str, str], Place]:
    """(the store's webhook URL, its secret) -> place: a transaction at the reference Paddle, then its event."""

    def sender(url: str, secret: str) -> Place:
        paddle = PaddleSender(url, secret)

        async def place(order_id: str, product: str, quantity: int) -> httpx.Response:
            return await paddle.send(billing.completed(billing.place(product, quantity, txn_id=order_id)))

        return place

    return sender


async def run_paddle_demo(orders: int = 6, stream: TextIO | None = None, deadline_s: float = 60.0) -> int:
    """Run the Paddle Billing demo; 0 if every order was delivered exactly once."""
    billing = PaddleBilling()
    async with serve(billing.app) as api:
        market = Market(
            "Paddle",
            lambda: f"pdl_ntfset_01{secrets.token_hex(12)}_{secrets.token_urlsafe(24)}",
            lambda: f"txn_{secrets.token_hex(4)}",
            _placer(billing),
            channel="email",
        )
        store = {"api_url": api.url, "api_key": billing.api_key}
        return await run_webhook_demo("paddle", orders, stream, deadline_s, market=market, store=store)
