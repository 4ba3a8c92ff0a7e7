"""A reference Virtual Stores shop: the staff API the daemon uses (login, refresh, orders, fulfil, timeline, status)
and, for the same orders, Stripe's signed events (:mod:`~delivery_daemon.reference.stripe_store`).

Bodies are the ones docs/marketplaces.md writes down where the Virtual Stores document is silent (see
:mod:`delivery_daemon.marketplaces.virtual_stores_api`). Faults for tests and demos: tokens expired mid-run (the next
request answers 401), the next fulfil requests answering 5xx, slow answers, "webhook never sent" (:meth:`announce`).

``GET /api/orders`` (the document's filters and pagination, bodies chosen here): ``payment_status``, ``date_from``
(a date or ISO date-time, UTC), ``search``, ``page`` (from 1) and ``page_size`` (1 to 100, default 20); newest first;
``{"items", "total", "page", "page_size"}``. An order's ``created_at`` is an ISO 8601 UTC date-time.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from delivery_daemon.reference.stripe_store import StripeStoreSender, charge_refunded, event, new_id

STAFF_EMAIL = "delivery@shop.example"


@dataclass
class ShopOrder:
    id: str
    payment_intent_id: str
    items: list[dict[str, Any]]
    currency: str
    customer_email: str
    payment_status: str = "paid"
    status: str = "processing"
    fulfilments: list[dict[str, Any]] = field(default_factory=list)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    total_override: str | None = None
    created_at: float = 0.0

    @property
    def total(self) -> str:
        if self.total_override is not None:
            return self.total_override
        total = sum(Decimal(str(i["unit_price"])) * int(i["quantity"]) for i in self.items)
        return str(Decimal(total).quantize(Decimal("0.01")))

    def minor(self) -> int:
        return int(Decimal(self.total) * 100)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "order_number": self.id,
            "status": self.status,
            "payment_status": self.payment_status,
            "payment_intent_id": self.payment_intent_id,
            "total": self.total,
            "currency": self.currency.upper(),
            "customer_email": self.customer_email,
            "items": self.items,
            "created_at": datetime.fromtimestamp(self.created_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }


@dataclass
class ShopFaults:
    expire_tokens: bool = False
    fulfil_failures: list[int] = field(default_factory=list)
    delay: float = 0.0
    webhooks_never_sent: int = 0
    """The next orders announced with :meth:`VirtualStoresShop.announce` are paid; Stripe never posts their event."""


class VirtualStoresShop:
    """The shop's state and its Starlette app (:attr:`app`)."""

    def __init__(
        self,
        webhook_secret: str | None = None,
        *,
        password: str | None = None,
        token_ttl: int = 900,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.webhook_secret = webhook_secret or f"whsec_{secrets.token_hex(24)}"
        self.password = password or secrets.token_urlsafe(18)
        self.token_ttl = token_ttl
        self.now = now
        self.orders: dict[str, ShopOrder] = {}
        self.tokens: dict[str, float] = {}  # access token -> expiry
        self.issued: list[str] = []  # every token ever issued (tests look for them in logs)
        self.faults = ShopFaults()
        self.logins = 0
        self.refreshes = 0
        self.requests: list[tuple[str, str, int]] = []
        self.app = Starlette(
            routes=[
                Route("/api/auth/login", self.login, methods=["POST"]),
                Route("/api/auth/refresh", self.refresh, methods=["POST"]),
                Route("/api/orders", self.list_orders, methods=["GET"]),
                Route("/api/orders/{order_id}", self.get_order, methods=["GET"]),
                Route("/api/orders/{order_id}/fulfill", self.fulfil, methods=["POST"]),
                Route("/api/orders/{order_id}/timeline", self.get_timeline, methods=["GET"]),
                Route("/api/orders/{order_id}/status", self.set_status, methods=["PUT"]),
            ]
        )

    # -- placing orders (the shop's checkout and its Stripe events) ------------------------------------------

    def place_order(
        self, items: list[dict[str, Any]], *, email: str = "buyer@example.org", currency: str = "eur"
    ) -> ShopOrder:
        """A paid order of ``items`` (``product_id``, ``variant_id``?, ``quantity``, ``unit_price``, ``name``?)."""
        order = ShopOrder(
            id=f"VS-{secrets.token_hex(4)}",
            payment_intent_id=new_id("pi"),
            items=[{"variant_id": None, **item} for item in items],
            currency=currency.lower(),
            customer_email=email,
            created_at=self.now(),
        )
        order.timeline.append({"at": self.now(), "event": "order.paid", "note": "payment received"})
        self.orders[order.id] = order
        return order

    def paid_event(
        self, order: ShopOrder, *, amount: int | None = None, currency: str | None = None, order_id: str | None = None
    ) -> dict[str, Any]:
        """Stripe's ``payment_intent.succeeded`` for ``order`` (``amount``/``currency``/``order_id`` to forge one)."""
        intent = {
            "id": order.payment_intent_id,
            "object": "payment_intent",
            "status": "succeeded",
            "amount": order.minor() if amount is None else amount,
            "amount_received": None,
            "currency": currency or order.currency,
            "receipt_email": order.customer_email,
            "metadata": {"order_id": order_id or order.id},
        }
        intent["amount_received"] = intent["amount"]
        return event("payment_intent.succeeded", intent)

    async def announce(self, order: ShopOrder, sender: StripeStoreSender) -> int | None:
        """Send ``order``'s ``payment_intent.succeeded`` through ``sender`` (its answer's status), unless a "webhook
        never sent" fault is armed (None: the order is paid and listed, never announced)."""
        if self.faults.webhooks_never_sent > 0:
            self.faults.webhooks_never_sent -= 1
            return None
        return (await sender.send(self.paid_event(order))).status_code

    def refund_event(self, order: ShopOrder) -> dict[str, Any]:
        charge = charge_refunded(order.payment_intent_id, order.minor())
        charge["metadata"] = {"order_id": order.id}
        return event("charge.refunded", charge)

    def sender(self, url: str, now: Callable[[], float] | None = None) -> StripeStoreSender:
        return StripeStoreSender(url, self.webhook_secret, now=now or self.now)

    # -- the staff API ---------------------------------------------------------------------------------------

    async def _enter(self, request: Request) -> Response | None:
        if self.faults.delay:
            await asyncio.sleep(self.faults.delay)
        return None

    def _authorised(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        token = header.removeprefix("Bearer ")
        if self.faults.expire_tokens:
            self.faults.expire_tokens = False
            self.tokens.clear()
        expiry = self.tokens.get(token)
        return expiry is not None and expiry > self.now()

    def _issue(self) -> dict[str, Any]:
        token = secrets.token_urlsafe(24)
        self.tokens[token] = self.now() + self.token_ttl
        self.issued.append(token)
        return {"access_token": token, "token_type": "bearer", "expires_in": self.token_ttl}

    def _log(self, request: Request, status: int) -> None:
        self.requests.append((request.method, request.url.path, status))

    async def login(self, request: Request) -> Response:
        await self._enter(request)
        data = await request.json()
        if data.get("email") != STAFF_EMAIL or data.get("password") != self.password:
            self._log(request, 401)
            return JSONResponse({"detail": "invalid credentials"}, status_code=401)
        self.logins += 1
        self._log(request, 200)
        return JSONResponse(self._issue())

    async def refresh(self, request: Request) -> Response:
        await self._enter(request)
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        if token not in self.tokens:  # an expired token may be refreshed; a cleared (revoked) one may not
            self._log(request, 401)
            return JSONResponse({"detail": "invalid token"}, status_code=401)
        del self.tokens[token]
        self.refreshes += 1
        self._log(request, 200)
        return JSONResponse(self._issue())

    def _guard(self, request: Request) -> tuple[Response | None, ShopOrder | None]:
        if not self._authorised(request):
            self._log(request, 401)
            return JSONResponse({"detail": "not authenticated"}, status_code=401), None
        order = self.orders.get(request.path_params.get("order_id", ""))
        if "order_id" in request.path_params and order is None:
            self._log(request, 404)
            return JSONResponse({"detail": "order not found"}, status_code=404), None
        return None, order

    async def list_orders(self, request: Request) -> Response:
        await self._enter(request)
        refused, _ = self._guard(request)
        if refused is not None:
            return refused
        query = request.query_params
        search, paid, day = query.get("search", ""), query.get("payment_status", ""), query.get("date_from", "")
        try:
            page, size = int(query.get("page", "1")), int(query.get("page_size", "20"))
            since = datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp() if day else None
        except ValueError:
            self._log(request, 422)
            return JSONResponse({"detail": "page, page_size and date_from must be numbers and a date"}, status_code=422)
        if page < 1 or not 1 <= size <= 100:
            self._log(request, 422)
            return JSONResponse({"detail": "page must be >= 1 and page_size 1 to 100"}, status_code=422)
        found = [
            o.as_json()
            for o in sorted(self.orders.values(), key=lambda o: o.created_at, reverse=True)
            if (not search or search in (o.id, o.payment_intent_id))
            and (not paid or o.payment_status == paid)
            and (since is None or o.created_at >= since)
        ]
        self._log(request, 200)
        items = found[(page - 1) * size : page * size]
        return JSONResponse({"items": items, "total": len(found), "page": page, "page_size": size})

    async def get_order(self, request: Request) -> Response:
        await self._enter(request)
        refused, order = self._guard(request)
        if refused is not None or order is None:
            return refused or JSONResponse({}, status_code=404)
        self._log(request, 200)
        return JSONResponse(order.as_json())

    async def fulfil(self, request: Request) -> Response:
        await self._enter(request)
        refused, order = self._guard(request)
        if refused is not None or order is None:
            return refused or JSONResponse({}, status_code=404)
        if self.faults.fulfil_failures:
            status = self.faults.fulfil_failures.pop(0)
            self._log(request, status)
            return JSONResponse({"detail": "temporarily unavailable"}, status_code=status)
        data = await request.json()
        if not isinstance(data, dict) or not data.get("carrier") or not data.get("tracking_number"):
            self._log(request, 422)
            return JSONResponse({"detail": "carrier and tracking_number are required"}, status_code=422)
        order.fulfilments.append(data)
        order.status = "fulfilled"
        order.timeline.append(
            {
                "at": self.now(),
                "event": "order.fulfilled",
                "note": f"{data['carrier']} {data['tracking_number']}",
                "tracking_url": data.get("tracking_url"),
            }
        )
        self._log(request, 200)
        return JSONResponse(order.as_json())

    async def get_timeline(self, request: Request) -> Response:
        await self._enter(request)
        refused, order = self._guard(request)
        if refused is not None or order is None:
            return refused or JSONResponse({}, status_code=404)
        self._log(request, 200)
        return JSONResponse({"items": order.timeline})

    async def set_status(self, request: Request) -> Response:
        await self._enter(request)
        refused, order = self._guard(request)
        if refused is not None or order is None:
            return refused or JSONResponse({}, status_code=404)
        data = await request.json()
        order.status = str(data.get("status"))
        order.timeline.append({"at": self.now(), "event": f"status.{order.status}", "note": data.get("note")})
        self._log(request, 200)
        return JSONResponse(order.as_json())
