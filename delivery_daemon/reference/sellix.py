"""A reference Sellix: sends webhooks as the Sellix document says — ``X-Sellix-Signature`` (hex HMAC-SHA512 of
the JSON body with the webhook secret) and ``X-Sellix-Event`` — with the order object as ``data``.

For ``product:dynamic`` it behaves as Sellix does: one request, no retry, and the whole response body of a 2xx
answer *is* the product handed to the buyer (recorded in ``products``)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

import httpx

from delivery_daemon.net.signatures import hex_hmac
from delivery_daemon.reference.sender import WebhookSender


def order(
    product_id: str,
    quantity: int | None = 1,
    email: str = "buyer@example.org",
    *,
    uniqid: str | None = None,
    product_type: str = "SERVICE",
    cart: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A Sellix order object with the fields the document shows."""
    data: dict[str, Any] = {
        "id": 0,
        "uniqid": uniqid or f"sellix-{secrets.token_hex(5)}",
        "total": 1.0,
        "currency": "USD",
        "customer_email": email,
        "product_id": product_id,
        "product_type": product_type,
        "gateway": "PAYPAL",
        "status": "COMPLETED",
        "created_at": 1587656376,
    }
    if quantity is not None:
        data["quantity"] = quantity
    if cart is not None:
        data["cart"] = {"products": cart}
    return data


@dataclass
class SellixSender(WebhookSender):
    """Sends Sellix webhooks; ``products`` maps an order uniqid to what a dynamic request got back."""

    products: dict[str, str] = field(default_factory=dict)

    def headers(self, body: bytes, event: str) -> dict[str, str]:
        return {"X-Sellix-Signature": hex_hmac(self.secret.encode(), body, "sha512"), "X-Sellix-Event": event}

    async def send(self, event: str, data: dict[str, Any]) -> httpx.Response:
        body = self.encode({"event": event, "data": data})
        return await self.post(body, self.headers(body, event))

    async def dynamic(self, data: dict[str, Any], *, wait: float = 30.0) -> str | None:
        """One ``product:dynamic`` request; the product (whole body) if the answer was 2xx, else None."""
        body = self.encode({"event": "product:dynamic", "data": data})
        response = await self.post(body, self.headers(body, "product:dynamic"), wait=wait)
        if not response.is_success:
            return None
        self.products[str(data["uniqid"])] = response.text
        return response.text
