"""SoftStore: ``sha1(sha1(api_key) + id_order)`` webhooks, JWT from the API key, ``delivery_url`` delivery.

The signature covers ``id_order`` only, so everything else in the webhook is treated as untrusted: the quantity and
product are taken from ``GET /orders/info/{id}``, and the ``delivery_url`` must be on the store's API origin (same
scheme, host and port as ``api_url``) or the webhook is refused and logged as a security event.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Mapping
from typing import Any

import httpx
import structlog

from delivery_daemon.backoff import parse_retry_after
from delivery_daemon.config import StoreSettings, expect
from delivery_daemon.errors import AuthenticationFailed, ConfigError, Dead, Retry, WebhookRejected
from delivery_daemon.marketplaces.base import (
    AdapterContext,
    Receipt,
    create_client,
    load_object,
    message_of,
    same_origin,
    transport_retry,
    url_host,
)
from delivery_daemon.marketplaces.listing import ListedOrder, OrderPage
from delivery_daemon.marketplaces.order_lists import listing_json, utc_seconds
from delivery_daemon.marketplaces.softstore_seller import SellerApi, listed_count, set_listed_count, store_status
from delivery_daemon.net.guard import BlockedDestination
from delivery_daemon.order import Content, IncomingOrder, MarketplaceOrder
from delivery_daemon.storage.models import Job

log = structlog.get_logger("delivery_daemon.softstore")

_ORDER_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
NOT_DELIVERABLE = (
    "SoftStore sends the delivery token only in the webhook: deliver this order from the SoftStore dashboard, or have "
    "SoftStore resend its webhook"
)
_TOKEN_MARGIN = 30.0  # refresh a JWT this many seconds before SoftStore says it expires


def signature(api_key: str, order_id: str) -> str:
    """SoftStore's documented webhook signature."""
    inner = hashlib.sha1(api_key.encode()).hexdigest()  # noqa: S324  (the marketplace's scheme, not our choice)
    return hashlib.sha1((inner + order_id).encode()).hexdigest()  # noqa: S324 (the marketplace's scheme)


def signed_test_webhook(api_key: str, api_url: str) -> dict[str, str]:
    """A webhook body signed as SoftStore signs it, for an order whose ``payment_status`` is not ``paid`` (the
    daemon verifies it, then ignores it); ``delivery_url`` is on the API origin, as the daemon requires."""
    order_id = f"delivery-daemon-test-{secrets.token_hex(4)}"
    return {
        "id_order": order_id,
        "id_product": "delivery-daemon-test",
        "signature": signature(api_key, order_id),
        "delivery_url": f"{api_url.rstrip('/')}/orders/delivery/test",
        "payment_status": "test",
    }


def _text_field(data: dict[str, Any], name: str, *, required: bool = True, max_len: int = 2048) -> str | None:
    value = data.get(name)
    if value is None:
        if required:
            raise WebhookRejected(400, f"missing field: {name}")
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise WebhookRejected(400, f"field {name} must be a string")
    text = str(value)
    if not text or len(text) > max_len:
        raise WebhookRejected(400, f"field {name} must be 1 to {max_len} characters")
    return text


class TokenCache:
    """One JWT per store, shared by every request, refreshed shortly before expiry or once after a 401."""

    def __init__(self, client: httpx.AsyncClient, api_key: str, clock: Any) -> None:
        self._client = client
        self._api_key = api_key
        self._clock = clock
        self._token: str | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()

    @property
    def current(self) -> str | None:
        return self._token

    async def get(self, *, stale: str | None = None) -> str:
        """A valid token; pass the token that just got a 401 as ``stale`` to force one refresh."""
        async with self._lock:
            if self._token and self._token != stale and self._clock.now() < self._expires:
                return self._token
            try:
                response = await self._client.post("/auth/api-key/create", headers={"X-API-KEY": self._api_key})
            except httpx.HTTPError as exc:
                raise transport_retry(exc) from None
            if response.status_code in (401, 403):
                raise AuthenticationFailed("SoftStore refused the API key")
            if response.status_code != 200:
                raise Retry(f"token request answered {response.status_code}", http_status=response.status_code)
            try:
                data = response.json()
                body = data.get("data", data) if isinstance(data, dict) else {}
                token = str(body["access_token"])
                ttl = float(body.get("expires_in", 3600))
            except (ValueError, KeyError, TypeError):
                raise Retry("token response unreadable") from None
            self._token = token
            self._expires = self._clock.now() + max(0.0, ttl - min(_TOKEN_MARGIN, ttl / 10))
            return token


class SoftStoreAdapter:
    """The SoftStore adapter for one store."""

    def __init__(self, context: AdapterContext) -> None:
        store = context.store
        if store.api_url is None:
            raise ConfigError(f"{context.path}.api_url", "required", *expect(StoreSettings, "api_url"))
        if store.api_key is None or not store.api_key.get_secret_value():
            raise ConfigError(f"{context.path}.api_key", "required", *expect(StoreSettings, "api_key"))
        self.store = store.name
        self.api_url = store.api_url
        self.clock = context.clock
        self._api_key = store.api_key.get_secret_value()
        self._signing_key = hashlib.sha1(self._api_key.encode()).hexdigest()  # noqa: S324 (the marketplace's scheme)
        self._client = create_client(context, base_url=self.api_url)
        self.tokens = TokenCache(self._client, self._api_key, context.clock)
        self._sink = SoftStoreDelivery(self)
        # Delivery tokens of recent deliveries, for the redactor (second line of defence: none is logged on purpose).
        self.recent_tokens: collections.deque[str] = collections.deque(maxlen=64)

    # -- receive ---------------------------------------------------------------------------------------------

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> IncomingOrder | None:
        data = load_object(body)
        order_id = _text_field(data, "id_order", max_len=128)
        assert order_id is not None
        if not _ORDER_ID.match(order_id):
            raise WebhookRejected(400, "field id_order has unexpected characters")
        product_id = _text_field(data, "id_product", max_len=128)
        sent_signature = _text_field(data, "signature", max_len=128)
        delivery_url = _text_field(data, "delivery_url")
        token = _text_field(data, "token", required=False, max_len=512)
        status = _text_field(data, "payment_status", required=False, max_len=32)
        expected = hashlib.sha1((self._signing_key + order_id).encode()).hexdigest()  # noqa: S324 (the marketplace's scheme)
        # Compared as bytes: compare_digest refuses str with non-ASCII characters (a TypeError, i.e. a 500).
        if not hmac.compare_digest(expected.encode(), (sent_signature or "").lower().encode()):
            raise WebhookRejected(403, "invalid signature")
        assert product_id is not None and delivery_url is not None
        if not same_origin(delivery_url, self.api_url):
            log.warning(
                "security.delivery_url_refused",
                store=self.store,
                order_id=order_id,
                delivery_host=url_host(delivery_url),
            )
            raise WebhookRejected(422, "delivery_url is not on the marketplace's host")
        if status is not None and status != "paid":
            return None
        return IncomingOrder(
            store=self.store,
            marketplace="softstore",
            order_id=order_id,
            product_id=product_id,
            payload={"delivery_url": delivery_url, "token": token},
        )

    # -- verify ----------------------------------------------------------------------------------------------

    async def _authorised(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """A request with the Bearer JWT; on a 401 the JWT is refreshed and the request sent once more."""
        token = await self.tokens.get()
        for attempt in (1, 2):
            try:
                response = await self._client.call(method, url, headers={"Authorization": f"Bearer {token}"}, **kwargs)
            except httpx.HTTPError as exc:
                raise transport_retry(exc) from None
            except BlockedDestination as exc:  # the client is pinned to api_url's origin: config must change
                raise Dead(f"not contacted: {exc}") from None
            if response.status_code != 401 or attempt == 2:
                return response
            log.info("marketplace.token_refreshed", store=self.store, reason="401")
            token = await self.tokens.get(stale=token)
        raise AssertionError("unreachable")

    async def fetch_order(self, job: Job) -> MarketplaceOrder:
        response = await self._authorised("GET", f"/orders/info/{job.order_id}")
        if response.status_code == 404:
            raise Dead(f"order not found at SoftStore: {message_of(response)}", http_status=404)
        if response.status_code == 401:
            raise Retry("SoftStore refused a fresh token", http_status=401)
        if response.status_code != 200:
            raise Retry(f"order info answered {response.status_code}", http_status=response.status_code)
        try:
            data = response.json()["data"]
            count = int(str(data["count"]))
            status = str(data["status_order"])
            product_id = str(data["id_product"])
        except (ValueError, KeyError, TypeError):
            raise Retry("order info unreadable", http_status=200) from None
        email = data.get("email")
        return MarketplaceOrder(
            order_id=job.order_id,
            product_id=product_id,
            paid=status == "paid",
            status=status,
            quantity=count,
            buyer_email=email if isinstance(email, str) else None,
        )

    # -- list (the missed-order watchdog) ---------------------------------------------------------------------

    async def list_paid_orders(self, since: float, cursor: str | None = None) -> OrderPage:
        """The paid orders placed at or after ``since``, from ``GET /orders``
        (:class:`~delivery_daemon.marketplaces.listing.OrderListing`).

        SoftStore documents no paging: the list is the seller's whole history in one answer (newest first), so this
        is one request and one page, filtered here. Its dates have no zone and are read as UTC. None of these orders
        is deliverable: SoftStore's delivery token arrives only in the webhook, so each is raised as missed.
        """
        data = listing_json(await self._authorised("GET", "/orders"), "SoftStore GET /orders")
        rows = data.get("data") if isinstance(data, dict) else None
        if not isinstance(rows, list):
            raise Retry("SoftStore GET /orders answer has no data list", http_status=200)
        found: list[ListedOrder] = []
        for row in rows:
            if not isinstance(row, dict) or row.get("status_order") != "paid":
                continue
            placed = utc_seconds(row.get("data_create"), row.get("time_create"))
            order_id, product_id = str(row.get("id_order") or ""), str(row.get("id_product") or "")
            if placed is None or placed < since or not _ORDER_ID.match(order_id) or not _ORDER_ID.match(product_id):
                continue  # an id the webhook would refuse is not an order this daemon can hold either
            order = IncomingOrder(self.store, "softstore", order_id, product_id, payload={"listed": True})
            found.append(ListedOrder(order, placed, deliverable=False, why_not=NOT_DELIVERABLE))
        return OrderPage(sorted(found, key=lambda listed: listed.created_at), None)

    # -- deliver ---------------------------------------------------------------------------------------------

    def sink(self) -> SoftStoreDelivery:
        return self._sink

    def seller(self) -> SellerApi:
        """The store's seller endpoints (its profile, a product's listed count), with this adapter's JWT."""
        return SellerApi(self._authorised)

    async def status(self) -> str:
        """One line on the store as the marketplace sees it (used by ``check-config``; may raise)."""
        return await store_status(self.seller(), self.store)

    async def listed_count(self, product_id: str) -> int:
        """The product's ``count`` on SoftStore (:class:`~delivery_daemon.marketplaces.optional.StockListing`)."""
        return await listed_count(self.seller(), product_id)

    async def set_listed_count(self, product_id: str, count: int) -> None:
        """Set the product's ``count`` on SoftStore (no moderation) for stock sync."""
        await set_listed_count(self.seller(), product_id, count, self.store)

    def secrets(self) -> list[str]:
        return [s for s in (self._api_key, self._signing_key, self.tokens.current, *self.recent_tokens) if s]

    def remember_token(self, payload: dict[str, Any], url: str) -> None:
        """Register an order's delivery token (the payload's ``token`` and the delivery URL's last segment).

        The whole URL is registered only when its last segment is too short to be one: scrubbing the segment
        scrubs every URL holding it, and each entry here is one more string the redactor checks every log line
        for (profile: the redactor was ~7 % of the drain, most of it checking 256 recent secrets per line).
        """
        segment = url.rstrip("/").rsplit("/", 1)[-1]
        for token in (payload.get("token"), segment if len(segment) >= 16 else url):
            if isinstance(token, str) and len(token) >= 16 and token not in self.recent_tokens:
                self.recent_tokens.append(token)

    async def aclose(self) -> None:
        await self._client.aclose()


class SoftStoreDelivery:
    """``POST {delivery_url}`` with ``{text, download}`` and the Bearer JWT."""

    name = "softstore"

    def __init__(self, adapter: SoftStoreAdapter) -> None:
        self._adapter = adapter

    async def send(self, job: Job, content: Content) -> Receipt:
        payload = json.loads(job.payload)
        url = str(payload.get("delivery_url") or "")
        if not same_origin(url, self._adapter.api_url):
            # Checked again here: the store's api_url may have changed since the webhook was accepted.
            log.warning("security.delivery_url_refused", store=job.store, order_id=job.order_id)
            raise Dead("delivery_url is not on the marketplace's host; not contacted")
        self._adapter.remember_token(payload, url)
        body: dict[str, Any] = {"text": content.text}
        if content.download:
            body["download"] = content.download
        response = await self._adapter._authorised("POST", url, json=body)
        status = response.status_code
        if status == 200:
            return Receipt("delivered", status)
        if status == 409:
            return Receipt("already", status, message_of(response))
        if status in (403, 404, 422):
            raise Dead(f"SoftStore answered {status}: {message_of(response)}", http_status=status)
        if status == 401:
            raise Retry("SoftStore refused a fresh token", http_status=status)
        after = parse_retry_after(response.headers.get("Retry-After"), self._adapter.clock.now())
        if status == 429 or status >= 500:
            raise Retry(f"SoftStore answered {status}", after=after, http_status=status)
        raise Retry(f"unexpected answer {status}: {message_of(response)}", http_status=status)


class SoftStore:
    """The marketplace type, for the explicit list handed to the daemon."""

    name = "softstore"

    def create(self, context: AdapterContext) -> SoftStoreAdapter:
        return SoftStoreAdapter(context)
