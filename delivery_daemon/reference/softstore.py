"""A reference SoftStore marketplace: the marketplace side of end-to-end tests and ``delivery-daemon demo``.

It implements, from the SoftStore seller API document, under ``/api/v1``:

* ``POST /auth/api-key/create`` (``X-API-KEY``) -> JWT-looking access token valid ``jwt_ttl`` seconds on the
  injected clock;
* ``GET /orders``, ``GET /orders/info/{id}``, ``POST /orders/delivery/{token}``;
* ``GET /seller``, ``POST /seller/profile``, ``GET /products/info/{id}``, ``POST /products/update/{id}``;
* the seller webhook: ``POST seller_url`` with the documented payload, signed
  ``sha1(sha1(api_key).hexdigest() + id_order).hexdigest()``;

plus fault injection (:class:`~delivery_daemon.reference.faults.Faults`) and a no-auth control API under
``/_reference`` so another process can drive it. There is a single seller, owner of every product and order.
The API's routes and handlers are :class:`~delivery_daemon.reference.softstore_api.SellerApi`; this module keeps the
marketplace's state, its orders and webhooks, and what tests inspect.

Choices where the document is ambiguous or silent:

* Token answer: the document's *Response Schema* is followed literally, ``{"access_token", "expires_in"}``
  at the top level, no envelope (its Node example reads ``auth.data.data.access_token``, contradicting it).
* Every other answer uses the envelope ``{"status": "success", "data": ...}`` /
  ``{"status": "error", "message": ...}``. Unauthorized is 401, validation 400 (delivery body problems 422,
  as its error table says), unknown ids 404, ``down`` 503, unknown ``/api/v1`` routes 404 "Not found".
* ``GET /orders`` lists newest first (as the example) with string amounts/counts; ``GET /orders/info/{id}``
  includes ``email`` as the example does (the prose says it is not exposed).
* Delivery checks, in order: unknown token 404 "Order not found"; already delivered 409 "Order already
  delivered"; order not ``paid`` 403 "Order is not paid" (the document lists 403 only for another seller's
  order; a delivery for an unpaid order must not be accepted); then the body: invalid JSON 422 "Invalid JSON",
  ``text`` missing/empty/not a string 422 "Field 'text' is required", ``download`` other than an https URL,
  ``false`` or ``null`` 422 "Invalid download URL". Only a 200 sets ``delivered``; a second delivery is always
  409, so accepted duplicates cannot happen.
* Slow deliveries are processed at once and *answered* late, so a client that times out and retries sees 409.
* Seller ``api_url`` and ``seller_url`` are the same thing (the webhook target); ``GET /seller`` returns the
  API key as documented. A product's own ``api_url`` is stored but not used for webhooks.
* ``place_order(send_webhook=True)`` sends the webhook (unless a "webhook never sent" fault is armed: the order is
  then paid and listed by ``GET /orders`` but never announced) whatever the order status (the payload always claims
  ``payment_status: "paid"``), which lets tests forge premature webhooks; a failed send leaves
  ``webhook_status`` None. Stock is decremented (not below 0) but never refuses an order.
* Dates are UTC from the injected clock. ``requests`` holds only ``/api/v1`` requests, in arrival order.

Secrets (API key, access tokens, delivery tokens, signatures) are never logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import structlog
from starlette.applications import Starlette

from delivery_daemon.http.serving import serve
from delivery_daemon.reference.control import control_routes
from delivery_daemon.reference.drop import ConnectionDroppedError, DroppableApp
from delivery_daemon.reference.faults import Faults
from delivery_daemon.reference.records import (
    ORDER_STATUSES,
    DeliveryRecord,
    OrderRecord,
    PlacedOrder,
    ProductRecord,
    RecordedRequest,
    WebhookRecord,
)
from delivery_daemon.reference.softstore_api import API_PREFIX, SellerApi

__all__ = ["ConnectionDroppedError", "SoftStoreMarketplace", "documented_signature", "run_marketplace"]

log = structlog.get_logger("delivery_daemon.reference")


def documented_signature(api_key: str, id_order: str) -> str:
    """``sha1(sha1(api_key) + id_order)`` with lowercase hex digests, as the document specifies."""
    inner = hashlib.sha1(api_key.encode()).hexdigest()  # noqa: S324 (SoftStore's documented scheme)
    return hashlib.sha1((inner + id_order).encode()).hexdigest()  # noqa: S324 (SoftStore's documented scheme)


class _NonClosingTransport(httpx.AsyncBaseTransport):
    """Lends an injected transport to a short-lived client without letting the client close it."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        return None


class SoftStoreMarketplace(SellerApi):
    """An in-process SoftStore with one seller, its products and orders, webhooks and fault injection."""

    def __init__(
        self,
        *,
        api_key: str,
        seller_url: str | None = None,
        jwt_ttl: float = 3600.0,
        clock: Callable[[], float] = time.time,
        webhook_transport: httpx.AsyncBaseTransport | None = None,
        seller_name: str = "Reference shop",
    ) -> None:
        if not api_key:
            raise ValueError("api_key must not be empty")
        self._api_key = api_key
        self.seller_url = seller_url
        self.jwt_ttl = jwt_ttl
        self.clock = clock
        self._webhook_transport = webhook_transport
        self.seller_name = seller_name
        self.seller_description = "Reference SoftStore seller for delivery-daemon tests"
        self._seller_created = clock()
        self.base_url: str | None = None
        self.faults = Faults()
        self.products: dict[str, ProductRecord] = {}
        self.orders: dict[str, OrderRecord] = {}
        self.requests: list[RecordedRequest] = []
        self.delivery_log: list[DeliveryRecord] = []
        self.webhooks: list[WebhookRecord] = []
        self._by_token: dict[str, str] = {}
        self._accepted: dict[str, DeliveryRecord] = {}
        self._jwts: dict[str, tuple[float, int]] = {}  # token -> (expires_at, faults.token_epoch at issue)
        self._jwt_secret = secrets.token_bytes(32)
        self._next_order_number = 1
        self.app: Starlette = DroppableApp(routes=[*self.api_routes(), *control_routes(self)])

    # -- wiring ----------------------------------------------------------------
    def bind(self, base_url: str) -> None:
        """Set where the marketplace is reachable (``http://host:port``); delivery URLs are built from it."""
        self.base_url = base_url.rstrip("/")

    @property
    def api_base(self) -> str:
        if self.base_url is None:
            raise RuntimeError("SoftStoreMarketplace.bind() has not been called")
        return self.base_url + API_PREFIX

    def add_product(self, id_product: str, *, name: str = "", price: int = 100, count: int = 100) -> None:
        """Create (or replace) a product of the seller."""
        self.products[id_product] = ProductRecord(
            id=id_product,
            name=name or f"Reference product {id_product}",
            price=price,
            count=count,
            created_at=self.clock(),
            uuid=f"ext-{id_product}",
        )

    def set_order_status(self, id_order: str, status: str) -> None:
        if status not in ORDER_STATUSES:
            raise ValueError(f"status must be one of {ORDER_STATUSES}")
        self.orders[id_order].status = status

    # -- orders and webhooks ---------------------------------------------------
    async def place_order(
        self,
        id_product: str,
        count: int = 1,
        *,
        status: str = "paid",
        send_webhook: bool = True,
        email: str = "buyer@example.com",
    ) -> PlacedOrder:
        """Create an order for ``id_product`` and (by default) POST its webhook to ``seller_url``."""
        product = self.products.get(id_product)
        if product is None:
            raise KeyError(f"unknown product {id_product!r}")
        if status not in ORDER_STATUSES:
            raise ValueError(f"status must be one of {ORDER_STATUSES}")
        if count < 1:
            raise ValueError("count must be >= 1")
        order = OrderRecord(
            id_order=secrets.token_hex(16),
            id_product=id_product,
            count=count,
            status=status,
            token=secrets.token_hex(32),
            email=email,
            internal_id=self._next_order_number,
            guest_id=secrets.token_hex(16),
            amount=product.price * count * (100 - product.discount) // 100,
            created_at=self.clock(),
        )
        self._next_order_number += 1
        product.count = max(0, product.count - count)
        self.orders[order.id_order] = order
        self._by_token[order.token] = order.id_order
        log.info("reference.order_placed", id_order=order.id_order, id_product=id_product, status=status)
        payload = self.webhook_payload(order.id_order)
        webhook_status: int | None = None
        if send_webhook and self.seller_url and not self.faults.take_webhook_fault():
            try:
                webhook_status = (await self.send_webhook(order.id_order)).status_code
            except httpx.HTTPError:
                webhook_status = None
        return PlacedOrder(
            id_order=order.id_order,
            id_product=id_product,
            count=count,
            token=order.token,
            delivery_url=payload["delivery_url"],
            payload=payload,
            webhook_status=webhook_status,
        )

    def webhook_payload(self, id_order: str) -> dict[str, Any]:
        """The documented, signed webhook body for an order."""
        order = self.orders[id_order]
        return {
            "id_order": order.id_order,
            "id_product": order.id_product,
            "payment_status": "paid",
            "signature": documented_signature(self._api_key, order.id_order),
            "delivery_url": f"{self.api_base}/orders/delivery/{order.token}",
            "token": order.token,
        }

    async def send_webhook(
        self,
        id_order: str,
        *,
        overrides: dict[str, Any] | None = None,
        url: str | None = None,
        omit: Sequence[str] = (),
    ) -> httpx.Response:
        """POST the order's webhook to ``url`` or ``seller_url``.

        ``overrides`` replace payload fields and ``omit`` removes them (to forge bad webhooks).
        Transport errors propagate (and are recorded in ``webhooks``).
        """
        target = url or self.seller_url
        if not target:
            raise RuntimeError("no seller_url configured for the webhook")
        payload = self.webhook_payload(id_order)
        payload.update(overrides or {})
        for key in omit:
            payload.pop(key, None)
        record = WebhookRecord(id_order=id_order, url=target, payload=payload, status=None, at=self.clock())
        self.webhooks.append(record)
        transport = None if self._webhook_transport is None else _NonClosingTransport(self._webhook_transport)
        try:
            async with httpx.AsyncClient(transport=transport, timeout=10.0, follow_redirects=False) as client:
                response = await client.post(target, json=payload)
        except httpx.HTTPError as exc:
            record.error = type(exc).__name__
            log.warning("reference.webhook_failed", id_order=id_order, error=record.error)
            raise
        record.status = response.status_code
        log.info("reference.webhook_sent", id_order=id_order, status=response.status_code)
        return response

    # -- inspection ------------------------------------------------------------
    def deliveries(self, id_order: str) -> list[DeliveryRecord]:
        """Every delivery POST made with this order's token, in arrival order."""
        return [record for record in self.delivery_log if record.id_order == id_order]

    def accepted(self, id_order: str) -> DeliveryRecord | None:
        """The single delivery answered 200 for this order, if any."""
        return self._accepted.get(id_order)

    def summary(self) -> dict[str, Any]:
        accepted = [record for record in self.delivery_log if record.status == 200]
        return {
            "orders": len(self.orders),
            "delivered": sum(1 for order in self.orders.values() if order.delivered),
            "deliveries_attempted": len(self.delivery_log),
            "deliveries_accepted": len(accepted),
            "duplicates": len(accepted) - len({record.id_order for record in accepted}),
            "conflicts_409": sum(1 for record in self.delivery_log if record.status == 409),
            "webhooks_sent": len(self.webhooks),
            "requests": len(self.requests),
            "faults_injected": dict(self.faults.injected),
            "faults_pending": self.faults.pending(),
        }


async def run_marketplace(*, host: str, port: int, api_key: str, seller_url: str | None, products: list[str]) -> None:
    """Serve a reference marketplace on ``host:port`` until cancelled (for the CLI and the demo)."""
    market = SoftStoreMarketplace(api_key=api_key, seller_url=seller_url)
    for id_product in products:
        market.add_product(id_product)
    async with serve(market.app, host, port) as running:
        shown = f"[{host}]" if ":" in host else host
        market.bind(f"http://{shown}:{running.port}")
        log.info(
            "reference.started",
            url=market.base_url,
            api_base=market.api_base,
            products=len(products),
            webhooks=bool(seller_url),
        )
        await asyncio.Event().wait()
