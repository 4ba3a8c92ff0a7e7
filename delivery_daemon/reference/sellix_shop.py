"""A reference Sellix shop: the seller's orders behind ``GET /orders?page=N`` as the Sellix document shows it
(``Authorization: Bearer <API secret>``, newest first, ``{"status": 200, "data": {"orders": [...]}}``), and the
``order:paid`` webhook of each order placed, sent through a :class:`~delivery_daemon.reference.sellix.SellixSender`.

Where the document is silent: a page holds ``page_size`` orders (default 20); a page past the last answers an empty
list; a missing or bad bearer token answers 401 with the document's error body; a ``page`` that is not a positive
integer answers 400. Faults (:class:`~delivery_daemon.reference.faults.Faults`): "webhook never sent" (the order is
paid and listed, its webhook never posted), and ``list_failures``, statuses the next list requests answer.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from delivery_daemon.reference.faults import Faults
from delivery_daemon.reference.sellix import SellixSender, order


def _answer(status: int, data: Any = None, error: str | None = None) -> JSONResponse:
    body = {"status": status, "data": data, "message": None, "log": None, "error": error, "env": "production"}
    return JSONResponse(body, status_code=status)


class SellixShop:
    """The shop's orders (oldest first in :attr:`orders`) and its Starlette app (:attr:`app`)."""

    def __init__(
        self,
        api_key: str,
        *,
        sender: SellixSender | None = None,
        now: Callable[[], float] = time.time,
        page_size: int = 20,
    ) -> None:
        self.api_key = api_key
        self.sender = sender
        self.now = now
        self.page_size = page_size
        self.orders: list[dict[str, Any]] = []
        self.faults = Faults()
        self.list_failures: list[int] = []
        self.requests: list[tuple[str, int]] = []
        self.app = Starlette(routes=[Route("/orders", self.list_orders, methods=["GET"])])

    async def place_order(
        self, product_id: str, quantity: int = 1, *, email: str = "buyer@example.org", product_type: str = "SERVICE"
    ) -> dict[str, Any]:
        """A ``COMPLETED`` order placed now; its ``order:paid`` webhook is sent unless a "webhook never sent" fault
        is armed (or no sender is set)."""
        data = order(product_id, quantity, email, product_type=product_type)
        data["id"] = len(self.orders) + 1
        data["created_at"] = int(self.now())
        self.orders.append(data)
        if self.sender is not None and not self.faults.take_webhook_fault():
            await self.sender.send("order:paid", data)
        return data

    async def list_orders(self, request: Request) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        response = self._list(request)
        self.requests.append((target, response.status_code))
        return response

    def _list(self, request: Request) -> Response:
        presented = request.headers.get("authorization", "").removeprefix("Bearer ")
        if not hmac.compare_digest(presented.encode(), self.api_key.encode()):
            return _answer(401, error="Unauthorized")
        if self.list_failures:
            return _answer(self.list_failures.pop(0), error="We had a problem with our server. Try again later.")
        raw = request.query_params.get("page", "1")
        if not raw.isdigit() or int(raw) < 1:
            return _answer(400, error="Invalid page.")
        start = (int(raw) - 1) * self.page_size
        newest_first = list(reversed(self.orders))
        return _answer(200, {"orders": newest_first[start : start + self.page_size]})
