"""A reference Shoppy: sends the document's webhook shape (``{"status": true, "webhook_type": "100", "data":
{"order": …, "product": …}}``) signed with ``X-Shoppy-Signature``, the hex HMAC-SHA512 of the body that public
integrations verify (the document itself does not specify a signature)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import httpx

from delivery_daemon.net.signatures import Algorithm, hex_hmac
from delivery_daemon.reference.sender import WebhookSender


def order(
    product_id: str, quantity: int = 1, email: str = "webhook@shoppy.gg", order_id: str | None = None
) -> dict[str, Any]:
    return {
        "id": order_id or secrets.token_hex(8),
        "product_id": product_id,
        "quantity": quantity,
        "email": email,
        "ip_address": "123.45.67.89",
        "country_code": "NL",
        "paid_at": "2017-12-03 13:55:30",
    }


@dataclass
class ShoppySender(WebhookSender):
    header: str = "X-Shoppy-Signature"
    algorithm: Algorithm = "sha512"

    async def send(
        self, webhook_type: int, data_order: dict[str, Any], product: dict[str, Any] | None = None
    ) -> httpx.Response:
        body = self.encode(
            {"status": True, "webhook_type": str(webhook_type), "data": {"order": data_order, "product": product or {}}}
        )
        return await self.post(body, {self.header: hex_hmac(self.secret.encode(), body, self.algorithm)})
