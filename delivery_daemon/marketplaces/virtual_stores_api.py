"""The Virtual Stores shop API as a staff member uses it: login, orders, fulfilment.

The document (``https://{slug}.store.inallweb.com/api/...``) lists the endpoints but not their bodies; the choices
made here, and written down in docs/marketplaces.md, are:

* ``POST /api/auth/login`` with ``{"email", "password"}`` answers ``{"access_token", "refresh_token"?,
  "expires_in"?}`` (an object, or that object under ``data``). Without ``expires_in`` the JWT's own ``exp`` claim is
  read (not verified: the shop checks its own tokens). ``POST /api/auth/refresh`` (Bearer) answers the same.
* ``GET /api/orders/{order_id}`` answers the order (see :func:`read_order`); ``GET /api/orders?search=pi_…`` a list
  (``items`` / ``orders`` / ``data``) searched for the order whose payment intent is the one paid.
* ``POST /api/orders/{order_id}/fulfill`` takes ``{"carrier", "tracking_number", "tracking_url"}``;
  ``PUT /api/orders/{order_id}/status`` takes ``{"status", "note"}``.

:class:`StaffSession` keeps one JWT per store and refreshes it before it expires; a 401 refreshes it once (and logs
in again if the refresh is refused) and the request is sent once more. Every request goes through the adapter's
:class:`~delivery_daemon.marketplaces.base.ApiClient`, pinned to the shop's origin. The password and the tokens are
registered with the log redactor (the adapter's ``secrets()``); none is put in a log line or an error.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import httpx
import structlog

from delivery_daemon.backoff import parse_retry_after
from delivery_daemon.clock import Clock
from delivery_daemon.errors import AuthenticationFailed, Dead, Retry
from delivery_daemon.marketplaces.base import ApiClient, message_of, transport_retry
from delivery_daemon.net.guard import BlockedDestination

log = structlog.get_logger("delivery_daemon.virtual_stores")

TOKEN_MARGIN = 60.0
"""Refresh the JWT this many seconds (at most a tenth of its life) before it expires."""
DEFAULT_TTL = 900.0
"""A token's life when neither ``expires_in`` nor the JWT's ``exp`` says (15 minutes)."""


def _body(response: httpx.Response) -> Any:
    """The JSON answer, unwrapped from ``{"data": …}`` when the shop wraps it; None when it is not JSON."""
    try:
        data = response.json()
    except ValueError:
        return None
    if isinstance(data, dict) and isinstance(data.get("data"), dict | list) and len(data) <= 3:
        return data["data"]
    return data


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT (seconds since the epoch), read without verifying; None when there is none."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, TypeError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


class StaffSession:
    """One staff JWT per store, shared by every request (see the module docstring)."""

    def __init__(self, client: ApiClient, email: str, password: str, clock: Clock, store: str) -> None:
        self._client = client
        self._email = email
        self._password = password
        self._clock = clock
        self._store = store
        self._access: str | None = None
        self._refresh: str | None = None
        self._refresh_at = 0.0
        self._lock = asyncio.Lock()
        self.logins = 0
        self.refreshes = 0

    def secrets(self) -> list[str]:
        """The password and the tokens held now, for the redactor."""
        return [s for s in (self._password, self._access, self._refresh) if s]

    async def token(self, *, stale: str | None = None) -> str:
        """A valid access token; ``stale`` (one that just got a 401) forces a refresh."""
        async with self._lock:
            if self._access and self._access != stale and self._clock.now() < self._refresh_at:
                return self._access
            if self._access is not None:
                refreshed = await self._exchange("/api/auth/refresh", None, bearer=self._refresh or self._access)
                if refreshed:
                    self.refreshes += 1
                    log.info("marketplace.token_refreshed", store=self._store, reason="401" if stale else "expiring")
                    assert self._access is not None
                    return self._access
            if not await self._exchange("/api/auth/login", {"email": self._email, "password": self._password}):
                raise AuthenticationFailed("Virtual Stores refused the staff login")
            self.logins += 1
            assert self._access is not None
            return self._access

    async def _exchange(self, path: str, body: dict[str, str] | None, *, bearer: str | None = None) -> bool:
        """Ask ``path`` for tokens and keep them; False when the shop refuses (401/403), Retry when it fails."""
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else None
        try:
            response = await self._client.call("POST", path, headers=headers, json=body if body is not None else {})
        except httpx.HTTPError as exc:
            raise transport_retry(exc) from None
        except BlockedDestination as exc:
            raise Dead(f"not contacted: {exc}") from None
        if response.status_code in (401, 403):
            return False
        if response.status_code != 200:
            raise Retry(f"{path} answered {response.status_code}", http_status=response.status_code)
        data = _body(response)
        token = data.get("access_token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            raise Retry(f"{path} answer has no access_token", http_status=200)
        assert isinstance(data, dict)
        refresh = data.get("refresh_token")
        now = self._clock.now()
        ttl = data.get("expires_in")
        if isinstance(ttl, int | float) and not isinstance(ttl, bool) and ttl > 0:
            life = float(ttl)
        else:
            exp = jwt_expiry(token)
            life = exp - now if exp is not None else DEFAULT_TTL
        self._access = token
        if isinstance(refresh, str) and refresh:
            self._refresh = refresh
        self._refresh_at = now + max(0.0, life - min(TOKEN_MARGIN, life / 10))
        return True


class ShopApi:
    """The staff endpoints the daemon uses, each answering the shop's JSON or raising Retry / Dead."""

    def __init__(self, client: ApiClient, session: StaffSession) -> None:
        self.client = client
        self.session = session

    async def request(self, method: str, path: str, body: Any = None) -> httpx.Response:
        """``method path`` with the staff JWT; a 401 refreshes the JWT once and sends the request again."""
        token = await self.session.token()
        for attempt in (1, 2):
            try:
                response = await self.client.call(method, path, headers={"Authorization": f"Bearer {token}"}, json=body)
            except httpx.HTTPError as exc:
                raise transport_retry(exc) from None
            except BlockedDestination as exc:  # pinned to api_url's origin: the config must change
                raise Dead(f"not contacted: {exc}") from None
            if response.status_code != 401 or attempt == 2:
                return response
            token = await self.session.token(stale=token)
        raise AssertionError("unreachable")

    @staticmethod
    def failed(response: httpx.Response, what: str) -> Retry:
        """A non-2xx answer as a Retry (with the shop's ``Retry-After`` when it sent one)."""
        after = (
            parse_retry_after(response.headers.get("retry-after"), 0.0) if response.status_code in (429, 503) else None
        )
        return Retry(
            f"{what} answered {response.status_code}: {message_of(response)}"[:300],
            after=after,
            http_status=response.status_code,
        )

    async def order(self, order_id: str) -> dict[str, Any] | None:
        """The order, or None when the shop has none by that id (404)."""
        response = await self.request("GET", f"/api/orders/{order_id}")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self.failed(response, "order")
        data = _body(response)
        if not isinstance(data, dict):
            raise Retry("order answer is not an object", http_status=200)
        return data

    async def order_by_payment(self, payment_intent: str) -> dict[str, Any] | None:
        """The order whose payment intent is ``payment_intent`` (a search of the order list), or None."""
        response = await self.request("GET", f"/api/orders?search={payment_intent}&page_size=20")
        if response.status_code != 200:
            raise self.failed(response, "order search")
        for row in order_rows(_body(response)):
            if isinstance(row, dict) and payment_intent_of(row) == payment_intent:
                return row
        return None

    async def orders_page(self, page: int, page_size: int, date_from: str) -> tuple[list[dict[str, Any]], bool]:
        """One page of the paid orders placed on or after the day ``date_from`` (``YYYY-MM-DD``): the orders, and
        whether another page follows (the answer's ``total`` when it gives one, else a full page)."""
        response = await self.request(
            "GET", f"/api/orders?payment_status=paid&date_from={date_from}&page={page}&page_size={page_size}"
        )
        if response.status_code != 200:
            raise self.failed(response, "order list")
        data = _body(response)
        rows = [row for row in order_rows(data) if isinstance(row, dict)]
        total = data.get("total") if isinstance(data, dict) else None
        if isinstance(total, int) and not isinstance(total, bool):
            return rows, page * page_size < total
        return rows, len(rows) >= page_size

    async def fulfil(self, order_id: str, tracking_number: str, tracking_url: str | None) -> int:
        """Mark the order fulfilled (carrier ``digital``); the answer's status. 409 (already fulfilled) is success."""
        body: dict[str, Any] = {"carrier": "digital", "tracking_number": tracking_number}
        if tracking_url:
            body["tracking_url"] = tracking_url
        response = await self.request("POST", f"/api/orders/{order_id}/fulfill", body)
        if response.status_code in (200, 201, 204, 409):
            return response.status_code
        if response.status_code in (400, 404, 422):
            raise Dead(
                f"fulfil refused {response.status_code}: {message_of(response)}"[:300], http_status=response.status_code
            )
        raise self.failed(response, "fulfil")

    async def note_status(self, order_id: str, status: str, note: str) -> None:
        """Set the order's status with a note for its timeline."""
        response = await self.request("PUT", f"/api/orders/{order_id}/status", {"status": status, "note": note})
        if response.status_code not in (200, 201, 204):
            raise self.failed(response, "status update")


def order_rows(data: Any) -> list[Any]:
    """The orders of a list answer: the answer itself when it is a list, else its ``items`` / ``orders`` /
    ``results`` / ``data`` list (empty when it has none)."""
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        return next((data[k] for k in ("items", "orders", "results", "data") if isinstance(data.get(k), list)), [])
    return []


def payment_intent_of(order: dict[str, Any]) -> str | None:
    """The Stripe PaymentIntent id an order was paid with, under any of the names a shop may give it."""
    for key in ("payment_intent_id", "stripe_payment_intent_id", "payment_intent"):
        value = order.get(key)
        if isinstance(value, str) and value:
            return value
    return None
