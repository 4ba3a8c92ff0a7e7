"""What the reference marketplaces that only *send* webhooks have in common: POST signed bytes to the seller's
URL and record each request with the answer it got (``sent``), so tests can assert on both sides."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass(frozen=True)
class Sent:
    """One webhook request the reference marketplace sent, and the seller's answer."""

    headers: dict[str, str]
    body: bytes
    status: int
    answer: str
    content_type: str


@dataclass
class WebhookSender:
    """Base of the reference senders; subclasses add the marketplace's own signing headers."""

    url: str
    secret: str
    now: Any = time.time
    sent: list[Sent] = field(default_factory=list)

    def encode(self, message: dict[str, Any]) -> bytes:
        """The body as the marketplace would serialise it (compact JSON)."""
        return json.dumps(message, separators=(",", ":")).encode()

    async def post(self, body: bytes, headers: dict[str, str], *, wait: float = 30.0) -> httpx.Response:
        """POST ``body`` once (no retries: the tests decide what is resent) and record it."""
        all_headers = {"Content-Type": "application/json", **headers}
        async with httpx.AsyncClient(timeout=wait) as client:
            response = await client.post(self.url, content=body, headers=all_headers)
        self.sent.append(
            Sent(all_headers, body, response.status_code, response.text, response.headers.get("content-type", ""))
        )
        return response
