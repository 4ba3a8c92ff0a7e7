"""A reference Stripe-paid store (Virtual Stores system on Stripe): builds Stripe events and sends them signed
exactly as Stripe documents ``Stripe-Signature``: ``t=<unix>,v1=<hex HMAC-SHA256 of "{t}.{body}">``, one ``v1``
per active endpoint secret (during a rotation)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import httpx

from delivery_daemon.net.signatures import stripe_header
from delivery_daemon.reference.sender import WebhookSender


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def event(kind: str, obj: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    """A Stripe event envelope."""
    return {
        "id": event_id or new_id("evt"),
        "object": "event",
        "type": kind,
        "api_version": "2024-06-20",
        "created": 0,
        "livemode": False,
        "data": {"object": obj},
    }


def payment_intent(
    product_id: str,
    quantity: int = 1,
    email: str | None = "buyer@example.org",
    pi_id: str | None = None,
    order_id: str | None = None,
) -> dict[str, Any]:
    """A succeeded PaymentIntent whose metadata names the product and quantity (as the store puts them)."""
    metadata = {"product_id": product_id, "quantity": str(quantity)}
    if order_id:
        metadata["order_id"] = order_id
    return {
        "id": pi_id or new_id("pi"),
        "object": "payment_intent",
        "status": "succeeded",
        "amount": 1000 * quantity,
        "currency": "eur",
        "receipt_email": email,
        "metadata": metadata,
    }


def charge_refunded(pi_id: str, amount: int = 1000) -> dict[str, Any]:
    return {
        "id": new_id("ch"),
        "object": "charge",
        "payment_intent": pi_id,
        "amount": amount,
        "amount_refunded": amount,
        "refunded": True,
        "currency": "eur",
        "metadata": {},
    }


def dispute(pi_id: str, reason: str = "fraudulent") -> dict[str, Any]:
    return {
        "id": new_id("dp"),
        "object": "dispute",
        "payment_intent": pi_id,
        "charge": new_id("ch"),
        "reason": reason,
        "status": "needs_response",
        "metadata": {},
    }


@dataclass
class StripeStoreSender(WebhookSender):
    """Sends Stripe events to the seller's webhook endpoint."""

    def headers(self, body: bytes, timestamp: int | None = None, extra_secrets: tuple[str, ...] = ()) -> dict[str, str]:
        t = int(self.now()) if timestamp is None else timestamp
        return {"Stripe-Signature": stripe_header([*extra_secrets, self.secret], body, t)}

    async def send(
        self, message: dict[str, Any], *, timestamp: int | None = None, extra_secrets: tuple[str, ...] = ()
    ) -> httpx.Response:
        body = self.encode(message)
        return await self.post(body, self.headers(body, timestamp, extra_secrets))
