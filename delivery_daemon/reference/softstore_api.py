"""The SoftStore seller API under ``/api/v1`` as the reference marketplace serves it (see
:mod:`delivery_daemon.reference.softstore` for the endpoints and the choices made where the document is silent).

:class:`SellerApi` is the HTTP side of :class:`~delivery_daemon.reference.softstore.SoftStoreMarketplace`: it records
each request, applies the injected faults, checks the bearer token and answers from the marketplace's orders and
products, which it reads and changes but does not create (placing orders and sending webhooks is the marketplace's).
Secrets (API key, access tokens, delivery tokens) are never logged.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from delivery_daemon.reference.drop import drop_connection
from delivery_daemon.reference.faults import Faults
from delivery_daemon.reference.records import (
    DeliveryRecord,
    OrderRecord,
    ProductRecord,
    RecordedRequest,
    ValidationError,
    valid_url,
    validate_product_update,
    validate_profile,
)

API_PREFIX = "/api/v1"
log = structlog.get_logger("delivery_daemon.reference")
_INVALID_JSON = object()


def envelope(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse({"status": "success", "data": data}, status_code=status)


def error(message: str, status: int, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"status": "error", "message": message}, status_code=status, headers=headers)


Handler = Callable[[Request, Any], Awaitable[Response]]


class SellerApi:
    """The seller API's routes and handlers, mixed into the marketplace whose state they serve."""

    # The marketplace's state (set by SoftStoreMarketplace.__init__).
    _api_key: str
    seller_url: str | None
    seller_name: str
    seller_description: str
    _seller_created: float
    jwt_ttl: float
    clock: Callable[[], float]
    faults: Faults
    products: dict[str, ProductRecord]
    orders: dict[str, OrderRecord]
    requests: list[RecordedRequest]
    delivery_log: list[DeliveryRecord]
    _by_token: dict[str, str]
    _accepted: dict[str, DeliveryRecord]
    _jwts: dict[str, tuple[float, int]]  # token -> (expires_at, faults.token_epoch at issue)
    _jwt_secret: bytes

    # -- HTTP plumbing ---------------------------------------------------------
    def api_routes(self) -> list[BaseRoute]:
        """The ``/api/v1`` routes; unknown ones answer 404 "Not found"."""
        api: list[tuple[str, Handler, str, bool]] = [
            ("/auth/api-key/create", self._auth_create, "POST", False),
            ("/orders", self._orders, "GET", True),
            ("/orders/info/{id}", self._order_info, "GET", True),
            ("/orders/delivery/{token}", self._delivery, "POST", True),  # records itself in delivery_log
            ("/seller", self._seller, "GET", True),
            ("/seller/profile", self._seller_profile, "POST", True),
            ("/products/info/{id}", self._product_info, "GET", True),
            ("/products/update/{id}", self._product_update, "POST", True),
        ]
        routes: list[BaseRoute] = [
            Route(API_PREFIX + path, self._api(handler, auth=auth), methods=[method])
            for path, handler, method, auth in api
        ]
        routes.append(
            Route(
                API_PREFIX + "/{rest:path}",
                self._api(self._not_found, auth=False),
                methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
            )
        )
        return routes

    def _api(self, handler: Handler, *, auth: bool) -> Callable[[Request], Awaitable[Response]]:
        """Wrap an API handler: record the request, apply ``down``, check the bearer token."""

        async def endpoint(request: Request) -> Response:
            body = await request.body()
            parsed: Any = None
            if body:
                try:
                    parsed = json.loads(body)
                except ValueError:
                    parsed = _INVALID_JSON
            record = RecordedRequest(
                method=request.method,
                path=request.url.path,
                headers=dict(request.headers),
                body=body,
                json=None if parsed is _INVALID_JSON else parsed,
                status=0,
                at=self.clock(),
            )
            self.requests.append(record)
            delivery: DeliveryRecord | None = None
            if handler == self._delivery:
                token: str = request.path_params["token"]
                delivery = DeliveryRecord(
                    id_order=self._by_token.get(token), token=token, body=body, json=record.json, status=0, at=record.at
                )
                self.delivery_log.append(delivery)
                request.state.delivery = delivery
            if self.faults.is_down:
                self.faults.note_down()
                response: Response = error("Service temporarily unavailable", 503)
            elif auth and not self._authorised(request):
                response = error("Unauthorized", 401)
            else:
                response = await handler(request, parsed)
            if not getattr(request.state, "dropped", False):
                record.status = response.status_code
                if delivery is not None:
                    delivery.status = response.status_code
            return response

        return endpoint

    def _authorised(self, request: Request) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        issued = self._jwts.get(token.strip()) if scheme.lower() == "bearer" else None
        if issued is None:
            return False
        expires_at, epoch = issued
        return epoch == self.faults.token_epoch and self.clock() < expires_at

    def _issue_jwt(self) -> str:
        now = self.clock()

        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        claims = {"sub": "1", "iat": int(now), "exp": int(now + self.jwt_ttl), "jti": secrets.token_hex(8)}
        body = b64(json.dumps(claims).encode())
        signature = b64(hmac.new(self._jwt_secret, f"{header}.{body}".encode(), hashlib.sha256).digest())
        token = f"{header}.{body}.{signature}"
        self._jwts[token] = (now + self.jwt_ttl, self.faults.token_epoch)
        return token

    # -- API handlers ----------------------------------------------------------
    async def _auth_create(self, request: Request, body: Any) -> Response:
        presented = request.headers.get("x-api-key", "")
        if not presented or not hmac.compare_digest(presented.encode(), self._api_key.encode()):
            return error("Invalid API key", 401)
        return JSONResponse({"access_token": self._issue_jwt(), "expires_in": int(self.jwt_ttl)})

    async def _orders(self, request: Request, body: Any) -> Response:
        newest_first = sorted(self.orders.values(), key=lambda order: order.internal_id, reverse=True)
        return envelope([order.listing() for order in newest_first])

    async def _order_info(self, request: Request, body: Any) -> Response:
        status = self.faults.take_order_info_fault()
        if status is not None:
            log.info("reference.fault", kind="order_info_fail", status=status)
            return error("Internal server error (injected)", status)
        order = self.orders.get(request.path_params["id"])
        if order is None:
            return error("Order not found or access denied", 404)
        return envelope(
            {
                "id": str(order.internal_id),
                "id_user": "0",
                "guest_id": order.guest_id,
                "buyer_type": "guest",
                "id_product": order.id_product,
                "id_seller": "1",
                "id_order": order.id_order,
                "email": order.email,
                **{k: v for k, v in order.listing().items() if k not in ("id_order", "id_product")},
                "payment_system": "reference",
            }
        )

    async def _delivery(self, request: Request, body: Any) -> Response:
        record: DeliveryRecord = request.state.delivery
        id_order = record.id_order
        fault = self.faults.take_delivery_fault()
        if fault is not None:
            record.fault = fault.kind
            log.info("reference.fault", kind=f"delivery_{fault.kind}", id_order=id_order)
        if fault is not None and fault.kind == "fail":
            headers = {"Retry-After": "1"} if fault.status == 429 else None
            return error("Temporary failure (injected)", fault.status, headers)
        if fault is not None and fault.kind == "drop":
            request.state.dropped = True
            await drop_connection(request)
            return Response(status_code=500)  # never reaches the client: the connection is gone
        response = self._deliver(id_order, body, record)
        record.status = response.status_code  # known now, even if the answer is held back below
        if fault is not None and fault.kind == "slow":
            await asyncio.sleep(fault.seconds)
        return response

    def _deliver(self, id_order: str | None, body: Any, record: DeliveryRecord) -> Response:
        order = self.orders.get(id_order) if id_order is not None else None
        if order is None:
            return error("Order not found", 404)
        if order.delivered:
            return error("Order already delivered", 409)
        if order.status != "paid":
            return error("Order is not paid", 403)
        if body is _INVALID_JSON or not isinstance(body, dict):
            return error("Invalid JSON", 422)
        text = body.get("text")
        if not isinstance(text, str) or not text.strip():
            return error("Field 'text' is required", 422)
        download = body.get("download")
        if not (download is None or download is False or valid_url(download, https_only=True)):
            return error("Invalid download URL", 422)
        order.delivered = True
        record.status = 200
        self._accepted[order.id_order] = record
        log.info("reference.delivery_accepted", id_order=order.id_order)
        return envelope({"message": "Product delivered successfully", "id_order": order.id_order, "delivered": True})

    async def _seller(self, request: Request, body: Any) -> Response:
        return envelope(
            {
                "id": 1,
                "id_user": 1,
                "name": self.seller_name,
                "balance": sum(order.amount for order in self.orders.values() if order.status == "paid"),
                "img": "",
                "description": self.seller_description,
                "api_url": self.seller_url or "",
                "data_create": time.strftime("%d.%m.%Y", time.gmtime(self._seller_created)),
                "rating": 0,
                "api_key": self._api_key,
                "status_moderation": 0,
            }
        )

    async def _seller_profile(self, request: Request, body: Any) -> Response:
        try:
            fields = validate_profile(None if body is _INVALID_JSON else body)
        except ValidationError as exc:
            return error(str(exc), 400)
        self.seller_name = fields.get("name", self.seller_name)
        self.seller_description = fields.get("description", self.seller_description)
        self.seller_url = fields.get("api_url", self.seller_url)
        return envelope(
            {
                "id": 1,
                "name": self.seller_name,
                "description": self.seller_description,
                "api_url": self.seller_url or "",
            }
        )

    async def _product_info(self, request: Request, body: Any) -> Response:
        product = self.products.get(request.path_params["id"])
        if product is None:
            return error("Product not found", 404)
        return envelope({"product": product.info()})

    async def _product_update(self, request: Request, body: Any) -> Response:
        status = self.faults.take_product_update_fault()
        if status is not None:
            log.info("reference.fault", kind="product_update_fail", status=status)
            return error("Internal server error (injected)", status)
        product = self.products.get(request.path_params["id"])
        if product is None:
            return error("Product not found or access denied", 404)
        taken = {other.uuid for other in self.products.values() if other is not product}
        try:
            fields, moderation = validate_product_update(None if body is _INVALID_JSON else body, taken_uuids=taken)
        except ValidationError as exc:
            return error(str(exc), 400)
        for key, value in fields.items():
            if key in ("name", "price", "count", "discount", "uuid"):
                setattr(product, key, value)
            else:
                product.extra[key] = value
        if moderation:
            product.status_moderation = "wait"
        return envelope({"message": "Product updated", "moderation": moderation})

    async def _not_found(self, request: Request, body: Any) -> Response:
        return error("Not found", 404)
