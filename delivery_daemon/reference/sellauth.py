"""A reference SellAuth: dynamic delivery as its guide describes it.

One POST per invoice item (``INVOICE.ITEM.DELIVER-DYNAMIC``), JSON, ``X-Signature`` = hex HMAC-SHA256 of the body
with the shop's webhook secret, ``X-Timestamp`` and an ``Idempotency-Key``; a 10 s deadline per request, 3 attempts
in all, 5 s apart, with the same key. The body of the first 2xx answer is what the buyer is shown (``shown``).
The pause between attempts is the injected ``pause`` (tests move a clock instead of sleeping).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from delivery_daemon.net.signatures import hex_hmac
from delivery_daemon.reference.sender import WebhookSender

EVENT = "INVOICE.ITEM.DELIVER-DYNAMIC"
ATTEMPTS = 3
INTERVAL = 5.0
DEADLINE = 10.0


def invoice_item(
    product_id: int | str,
    quantity: int = 1,
    email: str = "john.doe@example.com",
    *,
    invoice_id: int | None = None,
    item_id: int | None = None,
    variant_id: int = 1368,
) -> dict[str, Any]:
    """A dynamic-delivery request body for one item, with the fields the guide's example shows."""
    invoice = invoice_id if invoice_id is not None else secrets.randbelow(10**6) + 1
    return {
        "event": EVENT,
        "id": invoice,
        "unique_id": f"{secrets.token_hex(6)}-{invoice:013d}",
        "status": "partially_completed",
        "price": "25.00",
        "paid": "25.00",
        "currency": "USD",
        "amount": quantity,
        "gateway": "STRIPE",
        "email": email,
        "ip": "203.0.113.42",
        "country_code": "US",
        "user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0.0.0",
        "shop_id": 1,
        "shop_customer_id": 501,
        "created_at": "2026-02-01T11:30:00Z",
        "completed_at": "2026-02-01T11:31:10Z",
        "customer": {"id": 501, "shop_id": 1, "email": email},
        "item": {
            "id": item_id if item_id is not None else secrets.randbelow(10**6) + 1,
            "invoice_id": invoice,
            "product_id": product_id,
            "variant_id": variant_id,
            "status": "pending",
            "price": "25.00",
            "quantity": quantity,
            "total_price": "25.00",
        },
    }


async def _sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


@dataclass
class SellAuthSender(WebhookSender):
    """Sends dynamic-delivery requests; ``shown`` maps an Idempotency-Key to what the buyer was shown."""

    pause: Callable[[float], Awaitable[None]] = _sleep
    deadline: float = DEADLINE
    shown: dict[str, str] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def headers(self, body: bytes, key: str) -> dict[str, str]:
        return {
            "X-Signature": hex_hmac(self.secret.encode(), body, "sha256"),
            "X-Timestamp": str(int(self.now())),
            "Idempotency-Key": key,
        }

    async def attempt(self, message: dict[str, Any], key: str) -> httpx.Response | None:
        """One request with ``key``; None when it did not answer within the deadline or could not connect."""
        body = self.encode(message)
        try:
            return await self.post(body, self.headers(body, key), wait=self.deadline)
        except httpx.TimeoutException:
            self.failures.append("timeout")
        except httpx.TransportError as exc:
            self.failures.append(type(exc).__name__)
        return None

    async def deliver(self, message: dict[str, Any], *, key: str | None = None) -> str | None:
        """Up to 3 attempts with one Idempotency-Key, 5 s apart; the shown content of the first 2xx, else None."""
        key = key or secrets.token_hex(32)
        for number in range(ATTEMPTS):
            if number:
                await self.pause(INTERVAL)
            response = await self.attempt(message, key)
            if response is not None and response.is_success:
                self.shown[key] = response.text
                return response.text
        return None
