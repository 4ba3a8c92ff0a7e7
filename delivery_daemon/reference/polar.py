"""A reference Polar: sends ``order.paid`` / ``order.refunded`` as Polar does, Standard Webhooks headers signed with
the UTF-8 bytes of the secret its dashboard shows (what Polar's SDK base64-encodes for a generic library), and
retries a delivery as Polar documents: a try fails on a non-2xx answer, a timeout or no connection, and is retried up
to 10 times with exponential backoff, the same ``webhook-id`` each time, signed afresh."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from delivery_daemon.net.signatures import standard_headers
from delivery_daemon.reference.sender import WebhookSender, until_answered

RETRIES = 10
"""Polar retries a failed delivery up to 10 times (its webhook delivery docs): 11 tries in all."""
FIRST_BACKOFF = 15.0
"""Seconds before the first retry. Polar documents exponential backoff but not its base or factor: 15 s, doubling
each time, is this reference's choice (so the 10th retry comes about 4.3 hours after the first try)."""


def backoff(retry: int) -> float:
    """Seconds Polar waits before retry number ``retry`` (1-based): exponential, doubling from :data:`FIRST_BACKOFF`."""
    return FIRST_BACKOFF * float(2 ** (retry - 1))


def new_secret() -> str:
    """A secret in the form Polar's dashboard shows."""
    return f"polar_whs_{secrets.token_urlsafe(32)}"


def order(
    product_id: str, email: str | None = "buyer@example.org", *, order_id: str | None = None, status: str = "paid"
) -> dict[str, Any]:
    """A Polar Order object with the fields the adapter reads (and a few it does not)."""
    return {
        "id": order_id or str(uuid.uuid4()),
        "created_at": "2027-01-15T08:00:00Z",
        "status": status,
        "paid": status == "paid",
        "amount": 999,
        "currency": "usd",
        "billing_reason": "purchase",
        "product_id": product_id,
        "product": {"id": product_id, "name": f"Product {product_id}"},
        "customer": {"id": str(uuid.uuid4()), "email": email},
        "metadata": {},
    }


@dataclass
class PolarSender(WebhookSender):
    def headers(self, body: bytes, msg_id: str | None = None, timestamp: int | None = None) -> dict[str, str]:
        t = int(self.now()) if timestamp is None else timestamp
        return standard_headers(self.secret.encode(), msg_id or f"msg_{secrets.token_hex(8)}", t, body)

    async def send(
        self, kind: str, data: dict[str, Any], *, msg_id: str | None = None, timestamp: int | None = None
    ) -> httpx.Response:
        body = self.encode({"type": kind, "timestamp": "2027-01-15T08:00:00Z", "data": data})
        return await self.post(body, self.headers(body, msg_id, timestamp))

    async def deliver(
        self,
        kind: str,
        data: dict[str, Any],
        *,
        msg_id: str | None = None,
        pause: Callable[[float], Awaitable[None]] = asyncio.sleep,
        retries: int = RETRIES,
    ) -> list[httpx.Response]:
        """Send one event until it is answered 2xx, retrying up to ``retries`` times as Polar does: the same
        ``webhook-id``, a new timestamp and signature each try, ``pause(backoff(n))`` before retry ``n`` (a test
        passes a pause that advances its clock). Every answer, in order (599: no answer)."""
        event_id = msg_id or f"msg_{secrets.token_hex(8)}"
        return await until_answered(
            lambda: self.send(kind, data, msg_id=event_id), retries + 1, lambda n: pause(backoff(n))
        )
