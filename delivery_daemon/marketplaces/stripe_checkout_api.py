"""The parts of Stripe's REST API a Checkout store reads, with the store's secret key: Checkout Sessions and their line
items (``GET /v1/checkout/sessions``, ``/{id}``, ``/{id}/line_items``).

Every request is a GET with ``Authorization: Bearer <secret key>`` through the adapter's
:class:`~delivery_daemon.marketplaces.base.ApiClient`, pinned to the configured API origin (``https://api.stripe.com``
unless ``api_url`` says otherwise). Stripe's lists are newest first and page with ``starting_after`` (older) and
``ending_before`` (newer), at most 100 objects a page; their answer is ``{"object": "list", "data": [...],
"has_more": bool}``.

Failures: no answer, a 429 or a 5xx is :class:`~delivery_daemon.errors.Retry` (with Stripe's ``Retry-After`` when it
sends one); 401/403 is :class:`~delivery_daemon.errors.AuthenticationFailed` (the key is wrong or lacks the
``Checkout Sessions: read`` permission); any other refusal is :class:`~delivery_daemon.errors.MarketplaceError` with
Stripe's ``error.message``. The key is never in a reason or a log line.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

import httpx

from delivery_daemon.backoff import parse_retry_after
from delivery_daemon.errors import AuthenticationFailed, MarketplaceError, Retry
from delivery_daemon.marketplaces.base import ApiClient, transport_retry
from delivery_daemon.net.guard import BlockedDestination

STRIPE_API = "https://api.stripe.com"
PAGE = 100
"""Stripe's largest page."""
MAX_LINE_ITEMS = 1000
"""Line items read for one session at most: more is not a purchase this daemon can fulfil."""


def stripe_message(response: httpx.Response) -> str:
    """Stripe's ``error.message`` (or the status line), short, for a reason."""
    try:
        data: Any = response.json()
    except ValueError:
        return response.reason_phrase
    error = data.get("error") if isinstance(data, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return str(message)[:300] if isinstance(message, str) else response.reason_phrase


class StripeApi:
    """Reads Checkout Sessions with one secret key (see the module docstring)."""

    def __init__(self, client: ApiClient, secret_key: str) -> None:
        self.client = client
        self._auth = {"Authorization": f"Bearer {secret_key}"}

    async def get(self, path: str, params: dict[str, str | int] | None = None) -> httpx.Response:
        """``GET path?params``; the answer whatever its status, or Retry when none came."""
        url = f"{path}?{urlencode(params)}" if params else path
        try:
            return await self.client.call("GET", url, headers=self._auth)
        except httpx.HTTPError as exc:
            raise transport_retry(exc) from None
        except BlockedDestination as exc:
            raise MarketplaceError(f"not contacted: {exc}") from None

    @staticmethod
    def refused(response: httpx.Response, what: str) -> Exception:
        """The exception for a non-200 answer to ``what`` (see the module docstring)."""
        status = response.status_code
        if status == 429 or status >= 500:
            after = parse_retry_after(response.headers.get("retry-after"), 0.0)
            return Retry(f"Stripe answered {status} to {what}", after=after, http_status=status)
        if status in (401, 403):
            return AuthenticationFailed(f"Stripe refused the API key for {what} ({status}): {stripe_message(response)}")
        return MarketplaceError(f"Stripe answered {status} to {what}: {stripe_message(response)}")

    async def object(self, path: str, what: str) -> dict[str, Any] | None:
        """The JSON object at ``path``; None on 404."""
        response = await self.get(path)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self.refused(response, what)
        return _object(response, what)

    async def page(self, path: str, params: dict[str, str | int], what: str) -> tuple[list[dict[str, Any]], bool]:
        """One page of a list: its objects (newest first, as Stripe sends them) and ``has_more``."""
        response = await self.get(path, {"limit": PAGE, **params})
        if response.status_code != 200:
            raise self.refused(response, what)
        data = _object(response, what)
        rows = data.get("data")
        if not isinstance(rows, list):
            raise Retry(f"Stripe's answer to {what} has no data list", http_status=200)
        return [row for row in rows if isinstance(row, dict)], data.get("has_more") is True

    async def session(self, session_id: str) -> dict[str, Any] | None:
        """The Checkout Session, or None when Stripe has none by that id."""
        return await self.object(f"/v1/checkout/sessions/{quote(session_id, safe='')}", "the Checkout Session")

    async def line_items(self, session_id: str) -> list[dict[str, Any]]:
        """Every line item of the session, paging with ``starting_after``."""
        path = f"/v1/checkout/sessions/{quote(session_id, safe='')}/line_items"
        items: list[dict[str, Any]] = []
        params: dict[str, str | int] = {}
        while True:
            rows, more = await self.page(path, params, "the session's line items")
            items.extend(rows)
            last = rows[-1].get("id") if rows else None
            if not more or not isinstance(last, str) or len(items) >= MAX_LINE_ITEMS:
                return items
            params = {"starting_after": last}

    async def session_for_payment(self, payment_intent: str) -> dict[str, Any] | None:
        """The Checkout Session that created ``payment_intent`` (``GET /v1/checkout/sessions?payment_intent=``), or
        None when the payment did not come from Checkout."""
        rows, _ = await self.page("/v1/checkout/sessions", {"payment_intent": payment_intent}, "the session search")
        return next((row for row in rows if isinstance(row.get("id"), str)), None)


def _object(response: httpx.Response, what: str) -> dict[str, Any]:
    try:
        data: Any = response.json()
    except ValueError:
        raise Retry(f"Stripe's answer to {what} is not JSON", http_status=response.status_code) from None
    if not isinstance(data, dict):
        raise Retry(f"Stripe's answer to {what} is not an object", http_status=response.status_code)
    return data
