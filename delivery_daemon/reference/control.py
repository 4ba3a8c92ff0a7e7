"""The reference marketplace's control API under ``/_reference`` (no auth; JSON in, bare JSON out).

Errors answer ``{"status": "error", "message": ...}`` with 400 (bad input) or 404 (unknown id).

* ``POST /_reference/products`` ``{id_product, name?, price?, count?}``
* ``POST /_reference/orders`` ``{id_product, count?, status?, send_webhook?, email?}`` -> the PlacedOrder
* ``POST /_reference/orders/{id}/webhook`` ``{overrides?, omit?, url?}`` -> ``{"webhook_status", "payload"}``
* ``POST /_reference/orders/{id}/status`` ``{status}``
* ``GET /_reference/orders/{id}`` -> the order record, its deliveries, the accepted one and its webhooks
* ``POST /_reference/faults`` any of ``fail_next_deliveries`` (+ ``status``), ``drop_next_deliveries``,
  ``slow_next_deliveries`` (+ ``seconds``), ``fail_next_order_info`` (+ ``status``),
  ``fail_next_product_updates`` (+ ``status``), ``never_send_next_webhooks``, ``expire_tokens``, ``down``, ``clear``
  -> ``{"injected", "pending"}``
* ``GET /_reference/summary`` -> counts (see ``SoftStoreMarketplace.summary``)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from delivery_daemon.reference.faults import Faults
from delivery_daemon.reference.records import DeliveryRecord, OrderRecord, PlacedOrder, ProductRecord, WebhookRecord

PREFIX = "/_reference"


class Market(Protocol):
    """What the control API drives: the reference marketplace
    (:class:`~delivery_daemon.reference.softstore.SoftStoreMarketplace`, which mounts these routes)."""

    products: dict[str, ProductRecord]
    orders: dict[str, OrderRecord]
    webhooks: list[WebhookRecord]
    faults: Faults

    def add_product(self, id_product: str, *, name: str = ..., price: int = ..., count: int = ...) -> None: ...

    async def place_order(
        self, id_product: str, count: int = ..., *, status: str = ..., send_webhook: bool = ..., email: str = ...
    ) -> PlacedOrder: ...

    async def send_webhook(
        self, id_order: str, *, overrides: dict[str, Any] | None = ..., url: str | None = ..., omit: Sequence[str] = ...
    ) -> httpx.Response: ...

    def set_order_status(self, id_order: str, status: str) -> None: ...

    def accepted(self, id_order: str) -> DeliveryRecord | None: ...

    def deliveries(self, id_order: str) -> list[DeliveryRecord]: ...

    def summary(self) -> dict[str, Any]: ...


class _BadInput(ValueError):
    pass


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"status": "error", "message": message}, status_code=status)


async def _json_object(request: Request) -> dict[str, Any]:
    body = await request.body()
    if not body:
        return {}
    try:
        data = await request.json()
    except ValueError as exc:
        raise _BadInput("Invalid JSON") from exc
    if not isinstance(data, dict):
        raise _BadInput("Expected a JSON object")
    return data


def _int(data: dict[str, Any], key: str, default: int | None = None) -> int:
    value = data.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _BadInput(f"'{key}' must be an integer")
    return value


def control_routes(market: Market) -> list[BaseRoute]:
    """The ``/_reference`` routes driving ``market``."""

    Endpoint = Callable[[Request], Awaitable[Response]]

    def guarded(handler: Endpoint) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except _BadInput as exc:
                return _error(str(exc), 400)
            except (KeyError, ValueError) as exc:
                return _error(str(exc).strip("'\""), 404 if isinstance(exc, KeyError) else 400)

        return endpoint

    async def add_product(request: Request) -> Response:
        data = await _json_object(request)
        id_product = data.get("id_product")
        if not isinstance(id_product, str) or not id_product:
            raise _BadInput("'id_product' is required")
        name = data.get("name", "")
        if not isinstance(name, str):
            raise _BadInput("'name' must be a string")
        price, count = _int(data, "price", 100), _int(data, "count", 100)
        market.add_product(id_product, name=name, price=price, count=count)
        return JSONResponse(market.products[id_product].info(), status_code=201)

    async def place_order(request: Request) -> Response:
        data = await _json_object(request)
        id_product = data.get("id_product")
        if not isinstance(id_product, str) or id_product not in market.products:
            raise KeyError(f"unknown product {id_product!r}")
        placed = await market.place_order(
            id_product,
            _int(data, "count", 1),
            status=str(data.get("status", "paid")),
            send_webhook=bool(data.get("send_webhook", True)),
            email=str(data.get("email", "buyer@example.com")),
        )
        return JSONResponse(placed.to_json(), status_code=201)

    async def resend_webhook(request: Request) -> Response:
        data = await _json_object(request)
        id_order: str = request.path_params["id"]
        if id_order not in market.orders:
            raise KeyError(f"unknown order {id_order!r}")
        overrides = data.get("overrides") or {}
        omit = data.get("omit") or []
        url = data.get("url")
        if not isinstance(overrides, dict) or not isinstance(omit, list) or not isinstance(url, str | None):
            raise _BadInput("'overrides' must be an object, 'omit' a list, 'url' a string")
        try:
            response = await market.send_webhook(id_order, overrides=overrides, omit=[str(k) for k in omit], url=url)
        except httpx.HTTPError as exc:
            return JSONResponse({"webhook_status": None, "error": type(exc).__name__}, status_code=502)
        except RuntimeError as exc:
            raise _BadInput(str(exc)) from exc
        return JSONResponse({"webhook_status": response.status_code, "payload": market.webhooks[-1].payload})

    async def set_status(request: Request) -> Response:
        data = await _json_object(request)
        id_order: str = request.path_params["id"]
        if id_order not in market.orders:
            raise KeyError(f"unknown order {id_order!r}")
        market.set_order_status(id_order, str(data.get("status")))
        return JSONResponse(market.orders[id_order].to_json())

    async def order(request: Request) -> Response:
        id_order: str = request.path_params["id"]
        record = market.orders.get(id_order)
        if record is None:
            raise KeyError(f"unknown order {id_order!r}")
        accepted = market.accepted(id_order)
        return JSONResponse(
            {
                "order": record.to_json(),
                "deliveries": [delivery.to_json() for delivery in market.deliveries(id_order)],
                "accepted": None if accepted is None else accepted.to_json(),
                "webhooks": [
                    {"status": hook.status, "at": hook.at, "error": hook.error}
                    for hook in market.webhooks
                    if hook.id_order == id_order
                ],
            }
        )

    async def faults(request: Request) -> Response:
        data = await _json_object(request)
        known = {
            "fail_next_deliveries",
            "drop_next_deliveries",
            "slow_next_deliveries",
            "fail_next_order_info",
            "fail_next_product_updates",
            "never_send_next_webhooks",
            "expire_tokens",
            "down",
            "clear",
            "status",
            "seconds",
        }
        unknown = sorted(set(data) - known)
        if unknown:
            raise _BadInput(f"Unknown fault(s): {', '.join(unknown)}")
        f = market.faults
        if data.get("clear"):
            f.clear()
        status = _int(data, "status", 500)
        if "fail_next_deliveries" in data:
            f.fail_next_deliveries(_int(data, "fail_next_deliveries"), status)
        if "drop_next_deliveries" in data:
            f.drop_next_deliveries(_int(data, "drop_next_deliveries"))
        if "slow_next_deliveries" in data:
            seconds = data.get("seconds")
            if not isinstance(seconds, int | float) or isinstance(seconds, bool):
                raise _BadInput("'seconds' must be a number")
            f.slow_next_deliveries(_int(data, "slow_next_deliveries"), float(seconds))
        if "fail_next_order_info" in data:
            f.fail_next_order_info(_int(data, "fail_next_order_info"), status)
        if "fail_next_product_updates" in data:
            f.fail_next_product_updates(_int(data, "fail_next_product_updates"), status)
        if "never_send_next_webhooks" in data:
            f.never_send_next_webhooks(_int(data, "never_send_next_webhooks"))
        if data.get("expire_tokens"):
            f.expire_tokens()
        if "down" in data:
            f.down(bool(data["down"]))
        return JSONResponse({"injected": dict(f.injected), "pending": f.pending()})

    async def summary(request: Request) -> Response:
        return JSONResponse(market.summary())

    table: list[tuple[str, Callable[[Request], Awaitable[Response]], str]] = [
        ("/products", add_product, "POST"),
        ("/orders", place_order, "POST"),
        ("/orders/{id}/webhook", resend_webhook, "POST"),
        ("/orders/{id}/status", set_status, "POST"),
        ("/orders/{id}", order, "GET"),
        ("/faults", faults, "POST"),
        ("/summary", summary, "GET"),
    ]
    return [Route(PREFIX + path, guarded(handler), methods=[method]) for path, handler, method in table]
