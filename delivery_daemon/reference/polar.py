"""A reference Polar: sends ``order.paid`` / ``order.refunded`` as Polar does, Standard Webhooks headers signed with
the UTF-8 bytes of the secret its dashboard shows (what Polar's SDK base64-encodes for a generic library)."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from delivery_daemon.net.signatures import standard_headers
from delivery_daemon.reference.sender import WebhookSender


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
