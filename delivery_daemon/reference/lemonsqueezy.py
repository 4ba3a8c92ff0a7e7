"""A reference Lemon Squeezy for end-to-end tests, the demo and the chaos run: its orders API and its webhooks.

* The API (a Starlette app, JSON:API): ``GET /v1/orders/{id}`` and ``GET /v1/orders`` (``filter[store_id]``,
  ``page[number]``, ``page[size]`` up to 100, newest first, ``meta.page.lastPage``), Bearer API key, answers 401 and
  404 as JSON:API errors. Every order of the account is visible to its key, whatever the store, as on Lemon Squeezy.
* The webhooks: ``X-Signature`` (hex HMAC-SHA256 of the body with the signing secret) and ``X-Event-Name``, the body
  ``{"meta": {"event_name", "custom_data", "test_mode", "webhook_id"}, "data": <order resource>}``, sent with Lemon
  Squeezy's documented retry policy: a try that is not answered 2xx (or not answered at all) is tried again 5 s,
  25 s and 125 s later, and after the fourth try the webhook is dropped. Nothing sleeps: :meth:`LemonSqueezy.pump`
  sends every try that is due by the injected clock (tests advance a ``ManualClock`` between pumps).
* :meth:`LemonSqueezy.refund` marks an order refunded and queues its ``order_refunded`` webhook.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from delivery_daemon.net.signatures import hex_hmac

RETRY_DELAYS = (5.0, 25.0, 125.0)
"""Seconds from one failed try to the next: four tries in all, about 2.5 minutes, then the webhook is dropped."""


def iso(ts: float) -> str:
    """``2021-08-17T09:45:53.000000Z``, as Lemon Squeezy writes its times."""
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def signed_headers(secret: str, body: bytes, event: str) -> dict[str, str]:
    """The headers Lemon Squeezy sends with a webhook body."""
    return {
        "Content-Type": "application/json",
        "X-Event-Name": event,
        "X-Signature": hex_hmac(secret.encode(), body, "sha256"),
    }


def webhook_body(event: str, resource: dict[str, Any]) -> bytes:
    """A webhook's body for an order resource (compact JSON; the signature covers these exact bytes)."""
    meta = {"event_name": event, "custom_data": None, "test_mode": False, "webhook_id": str(uuid.uuid4())}
    return json.dumps({"meta": meta, "data": resource}, separators=(",", ":")).encode()


@dataclass
class Webhook:
    """One webhook and its tries: ``tries`` holds each answer's status (0: no answer)."""

    event: str
    order_id: str
    body: bytes
    due: float | None
    tries: list[int] = field(default_factory=list)

    @property
    def delivered(self) -> bool:
        return bool(self.tries) and 200 <= self.tries[-1] < 300

    @property
    def dropped(self) -> bool:
        return self.due is None and not self.delivered


@dataclass
class LemonSqueezy:
    """One Lemon Squeezy account with a store ``store_id``; ``seller_url`` is where its webhooks go."""

    api_key: str
    secret: str
    store_id: str = "1001"
    now: Callable[[], float] = time.time
    seller_url: str = ""
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    webhooks: list[Webhook] = field(default_factory=list)
    requests: list[tuple[str, int]] = field(default_factory=list)
    """Each API request's path and query, and the status it was answered."""

    @property
    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/orders", self._list, methods=["GET"]),
                Route("/v1/orders/{order_id}", self._get, methods=["GET"]),
            ]
        )

    # -- the seller's side of the account ----------------------------------------------------------------------

    def place(
        self,
        product_id: str,
        quantity: int = 1,
        email: str = "buyer@example.org",
        *,
        variant_id: str = "1",
        status: str = "paid",
        store_id: str | None = None,
        send: bool = True,
        order_id: str | None = None,
    ) -> str:
        """A new order (its id: the next number unless given); with ``send``, its ``order_created`` webhook is queued
        (see :meth:`pump`)."""
        order_id = order_id or str(1 + max((int(k) for k in self.orders if k.isdigit()), default=100_000))
        when = iso(self.now())
        self.orders[order_id] = {
            "type": "orders",
            "id": order_id,
            "attributes": {
                "store_id": int(store_id or self.store_id),
                "customer_id": 1,
                "identifier": str(uuid.uuid4()),
                "order_number": len(self.orders) + 1,
                "user_name": "Buyer",
                "user_email": email,
                "currency": "USD",
                "total": 999 * quantity,
                "status": status,
                "status_formatted": status.capitalize(),
                "refunded": False,
                "refunded_at": None,
                "first_order_item": {
                    "id": len(self.orders) + 1,
                    "order_id": int(order_id) if order_id.isdigit() else order_id,
                    "product_id": int(product_id) if product_id.isdigit() else product_id,
                    "variant_id": int(variant_id),
                    "quantity": quantity,
                    "product_name": f"Product {product_id}",
                    "variant_name": "Default",
                    "price": 999,
                    "created_at": when,
                    "updated_at": when,
                    "test_mode": False,
                },
                "created_at": when,
                "updated_at": when,
                "test_mode": False,
            },
            "relationships": {},
            "links": {"self": f"https://api.lemonsqueezy.com/v1/orders/{order_id}"},
        }
        if send:
            self.queue("order_created", order_id)
        return order_id

    def refund(self, order_id: str) -> Webhook:
        """Refund the order in full and queue its ``order_refunded`` webhook."""
        attributes = self.orders[order_id]["attributes"]
        attributes.update(status="refunded", status_formatted="Refunded", refunded=True, refunded_at=iso(self.now()))
        return self.queue("order_refunded", order_id)

    def queue(self, event: str, order_id: str) -> Webhook:
        """A webhook of the order as it is now, due at once."""
        hook = Webhook(event, order_id, webhook_body(event, self.orders[order_id]), due=self.now())
        self.webhooks.append(hook)
        return hook

    async def pump(self, wait: float = 10.0) -> int:
        """Send every try that is due; returns how many were sent. A failed try is due again after the next delay
        of :data:`RETRY_DELAYS`; after the last, the webhook is dropped (``due`` None, never sent again)."""
        due = [hook for hook in self.webhooks if hook.due is not None and hook.due <= self.now()]
        async with httpx.AsyncClient(timeout=wait) as client:
            for hook in due:
                try:
                    answer = await client.post(
                        self.seller_url, content=hook.body, headers=signed_headers(self.secret, hook.body, hook.event)
                    )
                    status = answer.status_code
                except httpx.HTTPError:
                    status = 0
                hook.tries.append(status)
                failed = len(hook.tries)
                hook.due = (
                    None if hook.delivered or failed > len(RETRY_DELAYS) else self.now() + RETRY_DELAYS[failed - 1]
                )
        return len(due)

    # -- the API -----------------------------------------------------------------------------------------------

    def _refused(self, request: Request) -> Response | None:
        sent = request.headers.get("authorization", "")
        if not secrets.compare_digest(sent.encode(), f"Bearer {self.api_key}".encode()):
            return _error(401, "Unauthorized", "Unauthenticated.")
        return None

    def _answer(self, request: Request, response: Response) -> Response:
        query = f"?{request.url.query}" if request.url.query else ""
        self.requests.append((f"{request.url.path}{query}", response.status_code))
        return response

    async def _get(self, request: Request) -> Response:
        refused = self._refused(request)
        order = self.orders.get(request.path_params["order_id"])
        if refused is None and order is None:
            refused = _error(404, "Not Found", "The requested resource was not found.")
        if refused is not None or order is None:
            return self._answer(request, refused or _error(404, "Not Found", "no such order"))
        return self._answer(request, _document({"data": order, "links": {"self": order["links"]["self"]}}))

    async def _list(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return self._answer(request, refused)
        query = request.query_params
        try:
            number = max(1, int(query.get("page[number]", "1")))
            size = min(100, max(1, int(query.get("page[size]", "10"))))
        except ValueError:
            return self._answer(request, _error(400, "Bad Request", "page must be a number"))
        store = query.get("filter[store_id]")
        found = [o for o in self.orders.values() if store is None or str(o["attributes"]["store_id"]) == store]
        found.sort(key=lambda o: (o["attributes"]["created_at"], int(o["id"])), reverse=True)
        last = max(1, -(-len(found) // size))
        page = found[(number - 1) * size : number * size]
        meta = {
            "currentPage": number,
            "from": (number - 1) * size + 1 if page else None,
            "lastPage": last,
            "perPage": size,
            "to": (number - 1) * size + len(page) if page else None,
            "total": len(found),
        }
        base = "https://api.lemonsqueezy.com/v1/orders?page[size]=" + str(size)
        links = {"first": f"{base}&page[number]=1", "last": f"{base}&page[number]={last}"}
        if number < last:
            links["next"] = f"{base}&page[number]={number + 1}"
        return self._answer(request, _document({"meta": {"page": meta}, "links": links, "data": page}))


def _document(body: dict[str, Any]) -> JSONResponse:
    return JSONResponse({"jsonapi": {"version": "1.0"}, **body}, media_type="application/vnd.api+json")


def _error(status: int, title: str, detail: str) -> JSONResponse:
    errors = [{"detail": detail, "status": str(status), "title": title}]
    return JSONResponse(
        {"jsonapi": {"version": "1.0"}, "errors": errors}, status, media_type="application/vnd.api+json"
    )
