"""A reference Gumroad, both halves a seller's daemon meets:

* :class:`GumroadPinger` sends Pings and resource-subscription POSTs as Gumroad does: an unsigned
  ``application/x-www-form-urlencoded`` POST to the seller's URL (which carries the seller's ``?token=``), resent
  after any answer but 200 once an hour for up to 3 hours (:data:`RETRY_DELAYS`; :meth:`GumroadPinger.resend_due`
  sends what is due on the injected clock, so tests move time instead of sleeping);
* :class:`GumroadApi` serves the sales API an access token reads: ``GET /v2/sales/{id}`` and ``GET /v2/sales``
  (newest first, ``after=YYYY-MM-DD``, ``page_key`` paging with ``next_page_key``), ``Authorization: Bearer``.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from delivery_daemon.reference.sender import WebhookSender

FORM = "application/x-www-form-urlencoded"
RETRY_DELAYS = (3600.0, 3600.0, 3600.0)
"""Gumroad's schedule for a Ping answered anything but 200: again after an hour, three times at most."""
SELLER_ID = "A-m3CDDC5dlrSdKZp0RFhA=="


def sale_id() -> str:
    """A fresh sale id shaped like Gumroad's (URL-safe base64 with ``==`` padding)."""
    return secrets.token_urlsafe(16)[:22] + "=="


def ping_form(sale: dict[str, Any], resource_name: str | None = None, *, test: bool = False) -> dict[str, str]:
    """The form fields Gumroad posts for ``sale`` (an API sale object): the Ping's names and string values."""
    form = {
        "seller_id": str(sale["seller_id"]),
        "product_id": str(sale["product_id"]),
        "product_name": str(sale["product_name"]),
        "permalink": str(sale["product_permalink"]),
        "product_permalink": f"https://seller.gumroad.com/l/{sale['product_permalink']}",
        "short_product_id": str(sale["product_permalink"]),
        "email": str(sale["email"]),
        "price": str(sale["price"]),
        "gumroad_fee": "10",
        "currency": "usd",
        "quantity": str(sale["quantity"]),
        "discover_fee_charged": "false",
        "can_contact": "true",
        "referrer": "direct",
        "card[visual]": "**** **** **** 4242",
        "order_number": str(sale["order_id"]),
        "sale_id": str(sale["id"]),
        "sale_timestamp": str(sale["created_at"]),
        "purchaser_id": "3523953790232",
        "test": "true" if test else "false",
        "ip_country": "Netherlands",
        "is_gift_receiver_purchase": "false",
        "refunded": "true" if sale["refunded"] else "false",
        "disputed": "true" if sale["disputed"] else "false",
        "dispute_won": "false",
    }
    if resource_name is not None:
        form["resource_name"] = resource_name
    return form


@dataclass
class Pending:
    """A Ping Gumroad will send again: its body, when, and how many resends are left."""

    body: bytes
    due: float
    left: int


@dataclass
class GumroadPinger(WebhookSender):
    """Sends Gumroad's POSTs to ``url`` with ``?token=secret``; see the module docstring."""

    pending: list[Pending] = field(default_factory=list)
    dropped: list[bytes] = field(default_factory=list)

    def ping_url(self) -> str:
        return f"{self.url}?{urlencode({'token': self.secret})}"

    async def _post(self, body: bytes) -> httpx.Response:
        target, self.url = self.url, self.ping_url()
        try:
            return await self.post(body, {"Content-Type": FORM})
        finally:
            self.url = target

    async def ping(self, form: dict[str, str]) -> httpx.Response:
        """Send ``form`` once now; anything but 200 is scheduled again on Gumroad's schedule."""
        body = urlencode(form).encode()
        response = await self._post(body)
        if response.status_code != 200:
            self.pending.append(Pending(body, self.now() + RETRY_DELAYS[0], len(RETRY_DELAYS)))
        return response

    async def resend_due(self) -> int:
        """Send every scheduled Ping whose time has come; the number sent."""
        due = [item for item in self.pending if item.due <= self.now()]
        for item in due:
            self.pending.remove(item)
            response = await self._post(item.body)
            if response.status_code == 200:
                continue
            left = item.left - 1
            if left > 0:
                self.pending.append(Pending(item.body, self.now() + RETRY_DELAYS[-left], left))
            else:
                self.dropped.append(item.body)
        return len(due)


@dataclass
class GumroadApi:
    """The sales API of one seller account; ``sales`` are API sale objects by id, newest last."""

    access_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    seller_id: str = SELLER_ID
    page_size: int = 10
    now: Callable[[], float] = time.time
    sales: dict[str, dict[str, Any]] = field(default_factory=dict)
    lookups: int = 0

    @property
    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v2/sales", self._list, methods=["GET"]),
                Route("/v2/sales/{id}", self._one, methods=["GET"]),
            ]
        )

    def sell(
        self, permalink: str, quantity: int = 1, email: str = "buyer@example.org", *, product_id: str | None = None
    ) -> dict[str, Any]:
        """Record a paid sale now and return it (an API sale object)."""
        when = datetime.fromtimestamp(self.now(), UTC)
        sale: dict[str, Any] = {
            "id": sale_id(),
            "email": email,
            "seller_id": self.seller_id,
            "timestamp": "less than a minute ago",
            "daystamp": when.strftime("%d %b %Y %I:%M %p"),
            "created_at": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "product_name": permalink.title(),
            "product_id": product_id or f"{permalink}-id==",
            "product_permalink": permalink,
            "price": 100 * quantity,
            "quantity": quantity,
            "order_id": secrets.randbelow(10**9),
            "paid": True,
            "refunded": False,
            "partially_refunded": False,
            "chargedback": False,
            "disputed": False,
        }
        self.sales[sale["id"]] = sale
        return sale

    def _authorised(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {self.access_token}"

    async def _one(self, request: Request) -> Response:
        if not self._authorised(request):
            return JSONResponse({"success": False, "message": "The access token is invalid."}, status_code=401)
        self.lookups += 1
        sale = self.sales.get(request.path_params["id"])
        if sale is None:
            return JSONResponse({"success": False, "message": "The sale was not found."}, status_code=404)
        return JSONResponse({"success": True, "sale": sale})

    async def _list(self, request: Request) -> Response:
        if not self._authorised(request):
            return JSONResponse({"success": False, "message": "The access token is invalid."}, status_code=401)
        after = request.query_params.get("after", "")
        newest_first = [s for s in reversed(self.sales.values()) if s["created_at"][:10] >= after]
        # Opaque keys with characters a URL must escape ("+", "/", "="), as a real cursor may have.
        start = int((request.query_params.get("page_key") or "0").split("+")[0])
        page = newest_first[start : start + self.page_size]
        more = start + self.page_size < len(newest_first)
        body: dict[str, Any] = {"success": True, "sales": page}
        if more:
            key = f"{start + self.page_size}+p/{start}="
            body["next_page_key"] = key
            body["next_page_url"] = f"/v2/sales?{urlencode({'page_key': key})}"
        return JSONResponse(body)
