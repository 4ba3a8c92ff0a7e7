"""Lemon Squeezy: ``X-Signature`` (hex HMAC-SHA256 of the raw body with the webhook's signing secret), orders
confirmed through the API (``GET /v1/orders/{id}``, Bearer API key, JSON:API) and listed for the missed-order
watchdog (``GET /v1/orders``, :class:`~delivery_daemon.marketplaces.listing.OrderListing`).

The body is ``{"meta": {"event_name": …, "custom_data": …}, "data": <order resource>}``; the order resource is
``{"type": "orders", "id": "123", "attributes": {"store_id", "status", "user_email", "first_order_item", …}}``.

* ``order_created`` with ``status: paid`` — a job. The product is ``first_order_item.product_id``, or
  ``"{product_id}:{variant_id}"`` when the store configures that variant on its own; the quantity is
  ``first_order_item.quantity`` (1 when absent); the buyer ``user_email``. Any other status (``pending``,
  ``failed``) is acknowledged and ignored: Lemon Squeezy sends no second event when such an order is paid later,
  so the order list (the watchdog) is what finds it.
* ``order_refunded`` — the refund path (:class:`~delivery_daemon.marketplaces.base.OrderEvent` ``refunded``), full
  or partial alike.
* Every other event is acknowledged and ignored.

Choices where Lemon Squeezy's documents are silent: the event is the *signed* ``meta.event_name`` (the
``X-Event-Name`` header only when the body has none, since no signature covers headers); the dedup key of an event
is ``"{event_name}:{data.id}"`` (no per-event id is documented); an order of another store (``attributes.store_id``
not the configured ``store_id``) is refused 422. Lemon Squeezy tries a webhook four times in about 2.5 minutes and
then drops it, so the order list is part of this adapter, not an extra. The signature covers the whole body, yet the
order is still read back from the API before generation (trust, but verify: a refund since the webhook shows there).
Lemon Squeezy has no API to deliver a seller's own keys to: the store delivers by ``email`` or ``webhook``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import httpx

from delivery_daemon.backoff import parse_retry_after
from delivery_daemon.config import StoreSettings, expect
from delivery_daemon.errors import AuthenticationFailed, ConfigError, Dead, MarketplaceError, Retry, WebhookRejected
from delivery_daemon.marketplaces.base import (
    AdapterContext,
    OrderEvent,
    Sink,
    WebhookResult,
    create_client,
    load_object,
    message_of,
    transport_retry,
)
from delivery_daemon.marketplaces.listing import ListedOrder, OrderPage
from delivery_daemon.marketplaces.signed_body import email, identifier, mapping, optional_mapping, quantity
from delivery_daemon.net.guard import BlockedDestination
from delivery_daemon.net.signatures import check_hex_hmac
from delivery_daemon.order import IncomingOrder, MarketplaceOrder
from delivery_daemon.storage.models import Job

DEFAULT_API = "https://api.lemonsqueezy.com"
JSON_API = "application/vnd.api+json"
ORDER_CREATED = "order_created"
ORDER_REFUNDED = "order_refunded"


def _required(context: AdapterContext, name: str) -> str:
    """The store's ``name`` setting as text, else ConfigError naming its key path."""
    value = getattr(context.store, name)
    text = value.get_secret_value() if hasattr(value, "get_secret_value") else value
    if not text:
        raise ConfigError(f"{context.path}.{name}", "required", *expect(StoreSettings, name))
    return str(text)


def created_at(attributes: Mapping[str, Any]) -> float:
    """``attributes.created_at`` (ISO 8601, e.g. ``2021-08-17T09:45:53.000000Z``) as unix seconds."""
    try:
        return datetime.fromisoformat(str(attributes["created_at"])).timestamp()
    except (KeyError, ValueError):
        raise MarketplaceError("an order in Lemon Squeezy's list has no readable created_at") from None


class LemonSqueezyAdapter:
    """A Lemon Squeezy store."""

    marketplace = "lemonsqueezy"
    page_size = 100
    """Orders per page of ``GET /v1/orders`` (the API's largest page)."""

    def __init__(self, context: AdapterContext) -> None:
        self.secret = _required(context, "webhook_secret")
        self._api_key = _required(context, "api_key")
        self.store_id = _required(context, "store_id")
        self.settings = context.store
        self.store = context.store.name
        self.clock = context.clock
        self._client = create_client(context, base_url=context.store.api_url or DEFAULT_API)
        self._headers = {"Authorization": f"Bearer {self._api_key}", "Accept": JSON_API}

    # -- receive ---------------------------------------------------------------------------------------------

    def product_of(self, item: Mapping[str, Any], where: str) -> str:
        """The job's product id for an order's first item: ``"{product_id}:{variant_id}"`` when the store lists
        that variant, else ``product_id``."""
        product = identifier(item.get("product_id"), f"{where}.product_id")
        variant = identifier(item.get("variant_id"), f"{where}.variant_id", required=False)
        if variant is not None and f"{product}:{variant}" in self.settings.products:
            return f"{product}:{variant}"
        assert product is not None
        return product

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookResult:
        check_hex_hmac(self.secret.encode(), body, headers.get("x-signature"), "sha256", "X-Signature")
        message = load_object(body)
        event = optional_mapping(message, "meta").get("event_name") or headers.get("x-event-name")
        if event not in (ORDER_CREATED, ORDER_REFUNDED):
            return None
        data = mapping(message, "data")
        if data.get("type") != "orders":
            raise WebhookRejected(422, "field data.type must be orders")
        order = self._order(data, "data")
        if event == ORDER_REFUNDED:
            return OrderEvent(
                self.store,
                self.marketplace,
                order.order_id,
                "refunded",
                order.product_id,
                detail=f"Lemon Squeezy {event} (status {order.payload['status']})",
                event_id=f"{event}:{order.order_id}",
            )
        if order.payload["status"] != "paid":
            return None
        return IncomingOrder(
            store=order.store,
            marketplace=order.marketplace,
            order_id=order.order_id,
            product_id=order.product_id,
            payload=order.payload,
            event_id=f"{event}:{order.order_id}",
            buyer_email=order.buyer_email,
        )

    def _order(self, data: Mapping[str, Any], where: str) -> IncomingOrder:
        """An order resource (a webhook's ``data`` or an entry of the API's list) as the job would store it;
        WebhookRejected 422 naming the field when it is not one of this store's orders."""
        order_id = identifier(data.get("id"), f"{where}.id")
        assert order_id is not None
        attributes = mapping(dict(data), "attributes")
        store_id = identifier(attributes.get("store_id"), f"{where}.attributes.store_id", required=False)
        if store_id is not None and store_id != self.store_id:
            raise WebhookRejected(422, f"field {where}.attributes.store_id is not this store's store_id")
        item = optional_mapping(attributes, "first_order_item")
        product_id = self.product_of(item, f"{where}.attributes.first_order_item")
        buyer = email(attributes.get("user_email"))
        count = quantity(item.get("quantity", 1), f"{where}.attributes.first_order_item.quantity")
        status = str(attributes.get("status") or "")
        return IncomingOrder(
            store=self.store,
            marketplace=self.marketplace,
            order_id=order_id,
            product_id=product_id,
            buyer_email=buyer,
            payload={"quantity": count, "buyer_email": buyer, "status": status},
        )

    # -- verify ----------------------------------------------------------------------------------------------

    async def _get(self, path: str) -> httpx.Response:
        try:
            response = await self._client.call("GET", path, headers=self._headers)
        except httpx.HTTPError as exc:
            raise transport_retry(exc) from None
        except BlockedDestination as exc:  # the client is pinned to api_url's origin: config must change
            raise Dead(f"not contacted: {exc}") from None
        status = response.status_code
        if status in (401, 403):
            raise AuthenticationFailed(f"Lemon Squeezy refused the API key ({status})")
        if status == 429 or status >= 500:
            after = parse_retry_after(response.headers.get("Retry-After"), self.clock.now())
            raise Retry(f"Lemon Squeezy answered {status}", after=after, http_status=status)
        return response

    async def fetch_order(self, job: Job) -> MarketplaceOrder:
        """``GET /v1/orders/{id}``: paid only when its status is ``paid`` (a ``pending`` order is retried)."""
        try:
            response = await self._get(f"/v1/orders/{job.order_id}")
        except AuthenticationFailed as exc:
            raise Retry(str(exc), http_status=401) from None
        if response.status_code == 404:
            raise Dead(f"order not found at Lemon Squeezy: {message_of(response)}", http_status=404)
        if response.status_code != 200:
            raise Retry(f"order answered {response.status_code}", http_status=response.status_code)
        try:
            data = response.json()["data"]
            order = self._order(data, "data")
        except (ValueError, KeyError, TypeError):
            raise Retry("order unreadable", http_status=200) from None
        except WebhookRejected as exc:
            raise Dead(f"Lemon Squeezy's order is not usable here: {exc.reason}") from None
        status = str(order.payload["status"])
        if status == "pending":
            raise Retry("the order is still pending at Lemon Squeezy")
        return MarketplaceOrder(
            order_id=job.order_id,
            product_id=order.product_id,
            paid=status == "paid",
            status=status,
            quantity=int(order.payload["quantity"]),
            buyer_email=order.buyer_email,
        )

    # -- list (the missed-order watchdog) ------------------------------------------------------------------------

    async def _page(self, number: int) -> tuple[list[dict[str, Any]], int]:
        """Page ``number`` of the store's orders (newest first, as the API lists them) and the last page's number."""
        query = f"filter[store_id]={self.store_id}&page[number]={number}&page[size]={self.page_size}"
        response = await self._get(f"/v1/orders?{query}")
        if response.status_code != 200:
            raise MarketplaceError(f"Lemon Squeezy's order list answered {response.status_code}")
        try:
            document = response.json()
            orders = [o for o in document["data"] if isinstance(o, dict)]
            last = int(document.get("meta", {}).get("page", {}).get("lastPage", number))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise MarketplaceError("Lemon Squeezy's order list is unreadable") from None
        return orders, last

    async def list_paid_orders(self, since: float, cursor: str | None = None) -> OrderPage:
        """The store's paid orders placed at or after ``since``, oldest first.

        The API lists newest first, so the first call walks forward to the last page that still holds an order
        from ``since`` on and answers that page; the cursor then walks back to page 1. An order placed meanwhile
        moves the older ones to later pages: a page may then repeat an order (the watchdog skips orders it has),
        never skip one."""
        if cursor is None:
            number = 1
            while True:
                orders, last = await self._page(number)
                if not orders or number >= last or created_at(orders[-1].get("attributes", {})) < since:
                    break
                number += 1
        else:
            number = int(cursor)
            orders, _ = await self._page(number)
        listed = []
        for data in reversed(orders):
            when = created_at(data.get("attributes", {}))
            if when < since:
                continue
            try:
                order = self._order(data, "data")
            except WebhookRejected:
                continue  # another store's order or one the daemon could not store: not ours to deliver
            if order.payload["status"] == "paid":
                listed.append(ListedOrder(order, when, deliverable=True))
        return OrderPage(listed, str(number - 1) if number > 1 else None)

    # -- deliver ---------------------------------------------------------------------------------------------

    def sink(self) -> Sink | None:
        return None

    def secrets(self) -> list[str]:
        return [self.secret, self._api_key]

    async def aclose(self) -> None:
        await self._client.aclose()


class LemonSqueezy:
    """The marketplace type, for the explicit list handed to the daemon."""

    name = "lemonsqueezy"

    def create(self, context: AdapterContext) -> LemonSqueezyAdapter:
        return LemonSqueezyAdapter(context)
