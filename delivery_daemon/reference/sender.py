"""What the reference marketplaces that only *send* webhooks have in common: POST signed bytes to the seller's
URL and record each request with the answer it got (``sent``), so tests can assert on both sides."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
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


UNANSWERED = 599
"""The status recorded for a try that got no HTTP answer (refused connection, timeout): a failed try."""


async def until_answered(
    send: Callable[[], Awaitable[httpx.Response]],
    attempts: int,
    between: Callable[[int], Awaitable[None]] | None = None,
) -> list[httpx.Response]:
    """Call ``send`` until it is answered 2xx, at most ``attempts`` times, as a marketplace retries a webhook; a try
    without an answer counts as :data:`UNANSWERED`. ``between(n)`` runs before try ``n + 1`` (where a test advances
    its clock instead of sleeping). Every answer, in order."""
    answers: list[httpx.Response] = []
    for attempt in range(1, attempts + 1):
        try:
            answers.append(await send())
        except httpx.TransportError:
            answers.append(httpx.Response(UNANSWERED))
        if answers[-1].is_success or attempt == attempts:
            break
        if between is not None:
            await between(attempt)
    return answers
