"""Standard Webhooks, both directions, for end-to-end tests:

* :class:`StandardWebhooksSender` plays "any other platform": signs with ``webhook-id`` / ``webhook-timestamp`` /
  ``webhook-signature`` (``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``, key = base64 after ``whsec_``);
* :class:`SellerSystem` plays the seller's own system receiving the ``webhook`` delivery channel: it verifies each
  request the same way (against its clock, 5 minutes), records it, and answers the statuses it is told to.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from delivery_daemon.config import whsec_key
from delivery_daemon.errors import WebhookRejected
from delivery_daemon.net.signatures import standard_headers, verify_standard
from delivery_daemon.reference.sender import WebhookSender


def new_secret() -> str:
    """A fresh ``whsec_`` secret (24 random bytes)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


@dataclass
class StandardWebhooksSender(WebhookSender):
    def headers(self, body: bytes, msg_id: str | None = None, timestamp: int | None = None) -> dict[str, str]:
        t = int(self.now()) if timestamp is None else timestamp
        return standard_headers(whsec_key(self.secret), msg_id or f"msg_{secrets.token_hex(8)}", t, body)

    async def send(
        self, kind: str, data: dict[str, Any], *, msg_id: str | None = None, timestamp: int | None = None
    ) -> httpx.Response:
        body = self.encode({"type": kind, "data": data})
        return await self.post(body, self.headers(body, msg_id, timestamp))


@dataclass(frozen=True)
class Received:
    msg_id: str
    body: dict[str, Any]
    status: int


@dataclass
class SellerSystem:
    """The seller's endpoint for the ``webhook`` channel; ``answers`` are consumed first (then 200).

    With ``hold`` set, each verified request awaits it before it is answered (a seller's system that is slow to
    answer, or a test that needs something to happen while a delivery is in flight)."""

    secret: str
    now: Callable[[], float] = time.time
    answers: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    rejected: int = 0
    hold: Callable[[], Awaitable[None]] | None = None

    @property
    def app(self) -> Starlette:
        return Starlette(routes=[Route("/hooks/orders", self._receive, methods=["POST"])])

    async def _receive(self, request: Request) -> Response:
        body = await request.body()
        try:
            msg_id = verify_standard(request.headers, body, [whsec_key(self.secret)], self.now(), 300)
        except WebhookRejected as exc:
            self.rejected += 1
            return JSONResponse({"error": exc.reason}, status_code=exc.status)
        if self.hold is not None:
            await self.hold()
        status = self.answers.pop(0) if self.answers else 200
        self.received.append(Received(msg_id, json.loads(body), status))
        return JSONResponse({"ok": status < 300}, status_code=status)

    def accepted(self) -> list[Received]:
        """Deliveries that were answered 2xx."""
        return [r for r in self.received if r.status < 300]
