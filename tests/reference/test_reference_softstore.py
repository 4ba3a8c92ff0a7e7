"""Pins the reference SoftStore marketplace to the seller API document, over real loopback sockets."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from delivery_daemon.http.serving import serve
from delivery_daemon.reference.softstore import SoftStoreMarketplace, run_marketplace

KEY = "sk-reference-test-key-0123456789"
PRODUCT = "69f36497dc78f"


class FakeClock:
    def __init__(self, now: float = 1_777_377_973.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Receiver:
    """A tiny seller endpoint that records webhooks."""

    def __init__(self) -> None:
        self.payloads: list[Any] = []
        self.content_types: list[str] = []
        self.status = 200
        self.url = ""
        self.app = Starlette(routes=[Route("/webhook", self.webhook, methods=["POST"])])

    async def webhook(self, request: Request) -> Response:
        self.payloads.append(await request.json())
        self.content_types.append(request.headers.get("content-type", ""))
        return JSONResponse({"success": True}, status_code=self.status)


def expected_signature(api_key: str, id_order: str) -> str:
    inner = hashlib.sha1(api_key.encode()).hexdigest()
    return hashlib.sha1((inner + id_order).encode()).hexdigest()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def market(clock: FakeClock) -> AsyncIterator[SoftStoreMarketplace]:
    m = SoftStoreMarketplace(api_key=KEY, clock=clock, jwt_ttl=600)
    m.add_product(PRODUCT, name="Windows 11 Pro Key", price=128, count=50)
    async with serve(m.app) as running:
        m.bind(running.url)
        yield m


@pytest.fixture
async def api(market: SoftStoreMarketplace) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=market.api_base, timeout=5) as client:
        yield client


@pytest.fixture
async def control(market: SoftStoreMarketplace) -> AsyncIterator[httpx.AsyncClient]:
    assert market.base_url is not None
    async with httpx.AsyncClient(base_url=market.base_url + "/_reference", timeout=5) as client:
        yield client


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    async with serve(rec.app) as running:
        rec.url = running.url + "/webhook"
        yield rec


async def login(api: httpx.AsyncClient) -> dict[str, str]:
    response = await api.post("/auth/api-key/create", headers={"X-API-KEY": KEY})
    assert response.status_code == 200
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def deliver(api: httpx.AsyncClient, auth: dict[str, str], token: str, body: Any) -> httpx.Response:
    return await api.post(f"/orders/delivery/{token}", headers=auth, json=body)


# -- auth -------------------------------------------------------------------------------------------------


async def test_auth_right_key_issues_token(api: httpx.AsyncClient) -> None:
    """The right X-API-KEY yields the documented top-level access_token / expires_in."""
    response = await api.post("/auth/api-key/create", headers={"X-API-KEY": KEY})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "expires_in"}
    assert body["expires_in"] == 600
    assert isinstance(body["access_token"], str) and body["access_token"].count(".") == 2


@pytest.mark.parametrize("headers", [{}, {"X-API-KEY": "wrong"}, {"X-API-KEY": ""}])
async def test_auth_bad_key_is_401(api: httpx.AsyncClient, headers: dict[str, str]) -> None:
    """A missing or wrong API key answers 401 with the error envelope."""
    response = await api.post("/auth/api-key/create", headers=headers)
    assert response.status_code == 401
    assert response.json()["status"] == "error"


@pytest.mark.parametrize("auth", [{}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}])
async def test_api_without_valid_token_is_401(api: httpx.AsyncClient, auth: dict[str, str]) -> None:
    """Without a known bearer token every endpoint answers 401 Unauthorized."""
    for method, path in [("GET", "/orders"), ("GET", "/seller"), ("POST", "/orders/delivery/x")]:
        response = await api.request(method, path, headers=auth, json={"text": "k"})
        assert response.status_code == 401
        assert response.json() == {"status": "error", "message": "Unauthorized"}


async def test_token_expires_after_ttl_on_injected_clock(api: httpx.AsyncClient, clock: FakeClock) -> None:
    """A token works until jwt_ttl seconds have passed on the injected clock, then answers 401."""
    auth = await login(api)
    clock.advance(599)
    assert (await api.get("/orders", headers=auth)).status_code == 200
    clock.advance(1)
    assert (await api.get("/orders", headers=auth)).status_code == 401
    assert (await api.get("/orders", headers=await login(api))).status_code == 200


# -- orders -----------------------------------------------------------------------------------------------


async def test_orders_list_documented_fields(market: SoftStoreMarketplace, api: httpx.AsyncClient) -> None:
    """GET /orders lists orders newest first with the documented string fields."""
    first = await market.place_order(PRODUCT, 5, send_webhook=False)
    second = await market.place_order(PRODUCT, 16, status="wait", send_webhook=False)
    response = await api.get("/orders", headers=await login(api))
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "success"
    assert [o["id_order"] for o in body["data"]] == [second.id_order, first.id_order]
    item = body["data"][1]
    assert item == {
        "id_order": first.id_order,
        "id_product": PRODUCT,
        "amount": "640",
        "status_order": "paid",
        "data_create": "2026-04-28",
        "time_create": "12:06:13",
        "count": "5",
    }
    assert body["data"][0]["status_order"] == "wait"


async def test_order_info_documented_fields(market: SoftStoreMarketplace, api: httpx.AsyncClient) -> None:
    """GET /orders/info/{id} answers the documented fields (count as a string, email included)."""
    placed = await market.place_order(PRODUCT, 3, send_webhook=False, email="ads@example.org")
    response = await api.get(f"/orders/info/{placed.id_order}", headers=await login(api))
    assert response.status_code == 200
    data = response.json()["data"]
    assert set(data) == {
        "id",
        "id_user",
        "guest_id",
        "buyer_type",
        "id_product",
        "id_seller",
        "id_order",
        "email",
        "status_order",
        "data_create",
        "time_create",
        "amount",
        "count",
        "payment_system",
    }
    assert (data["id_order"], data["id_product"], data["count"]) == (placed.id_order, PRODUCT, "3")
    assert (data["email"], data["status_order"], data["amount"]) == ("ads@example.org", "paid", "384")
    market.set_order_status(placed.id_order, "canceled")
    again = await api.get(f"/orders/info/{placed.id_order}", headers=await login(api))
    assert again.json()["data"]["status_order"] == "canceled"


async def test_order_info_unknown_is_404(api: httpx.AsyncClient) -> None:
    """An unknown order id answers 404 'Order not found or access denied'."""
    response = await api.get("/orders/info/" + "0" * 32, headers=await login(api))
    assert response.status_code == 404
    assert response.json() == {"status": "error", "message": "Order not found or access denied"}


# -- delivery ---------------------------------------------------------------------------------------------


async def test_delivery_accepted_once_then_409(market: SoftStoreMarketplace, api: httpx.AsyncClient) -> None:
    """The first valid delivery answers the documented 200; the second answers 409 and delivers nothing."""
    placed = await market.place_order(PRODUCT, send_webhook=False)
    auth = await login(api)
    body = {"text": "KEY-1", "download": "https://cdn.example.com/file.zip"}
    first = await api.post(placed.delivery_url, headers=auth, json=body)
    assert first.status_code == 200
    assert first.json() == {
        "status": "success",
        "data": {"message": "Product delivered successfully", "id_order": placed.id_order, "delivered": True},
    }
    second = await deliver(api, auth, placed.token, {"text": "KEY-2"})
    assert second.status_code == 409
    assert second.json()["message"] == "Order already delivered"
    assert market.orders[placed.id_order].delivered
    assert [d.status for d in market.deliveries(placed.id_order)] == [200, 409]
    accepted = market.accepted(placed.id_order)
    assert accepted is not None and accepted.json == body


@pytest.mark.parametrize("download", [False, None])
async def test_delivery_download_false_or_null_is_fine(
    market: SoftStoreMarketplace, api: httpx.AsyncClient, download: Any
) -> None:
    """download may be false or null, as in the document's examples."""
    placed = await market.place_order(PRODUCT, send_webhook=False)
    response = await deliver(api, await login(api), placed.token, {"text": "KEY", "download": download})
    assert response.status_code == 200


async def test_delivery_bad_token_is_404(api: httpx.AsyncClient, market: SoftStoreMarketplace) -> None:
    """An unknown delivery token answers 404 'Order not found'."""
    response = await deliver(api, await login(api), "f" * 64, {"text": "KEY"})
    assert response.status_code == 404
    assert response.json() == {"status": "error", "message": "Order not found"}
    assert market.delivery_log[-1].id_order is None


@pytest.mark.parametrize("download", ["http://cdn.example.com/f.zip", "ftp://x/y", "https://", "", True, 5])
async def test_delivery_non_https_download_is_422(
    market: SoftStoreMarketplace, api: httpx.AsyncClient, download: Any
) -> None:
    """A download that is not an https URL answers 422 'Invalid download URL' and does not deliver."""
    placed = await market.place_order(PRODUCT, send_webhook=False)
    response = await deliver(api, await login(api), placed.token, {"text": "KEY", "download": download})
    assert response.status_code == 422
    assert response.json()["message"] == "Invalid download URL"
    assert not market.orders[placed.id_order].delivered


@pytest.mark.parametrize("body", [{}, {"text": ""}, {"text": "   "}, {"text": 12}, ["text"]])
async def test_delivery_missing_text_is_422(market: SoftStoreMarketplace, api: httpx.AsyncClient, body: Any) -> None:
    """A missing, empty or non-string text answers 422."""
    placed = await market.place_order(PRODUCT, send_webhook=False)
    response = await deliver(api, await login(api), placed.token, body)
    assert response.status_code == 422
    assert response.json()["status"] == "error"
    assert market.accepted(placed.id_order) is None


async def test_delivery_invalid_json_is_422(market: SoftStoreMarketplace, api: httpx.AsyncClient) -> None:
    """A body that is not JSON answers 422 'Invalid JSON'."""
    placed = await market.place_order(PRODUCT, send_webhook=False)
    auth = await login(api) | {"Content-Type": "application/json"}
    response = await api.post(f"/orders/delivery/{placed.token}", headers=auth, content=b"{not json")
    assert (response.status_code, response.json()["message"]) == (422, "Invalid JSON")


@pytest.mark.parametrize("status", ["wait", "canceled"])
async def test_delivery_unpaid_order_is_403(market: SoftStoreMarketplace, api: httpx.AsyncClient, status: str) -> None:
    """A delivery for an order that is not paid answers 403 'Order is not paid'."""
    placed = await market.place_order(PRODUCT, status=status, send_webhook=False)
    response = await deliver(api, await login(api), placed.token, {"text": "KEY"})
    assert (response.status_code, response.json()["message"]) == (403, "Order is not paid")


# -- webhooks ---------------------------------------------------------------------------------------------


async def test_webhook_payload_and_signature_match_document(market: SoftStoreMarketplace) -> None:
    """The payload has exactly the documented fields and the sha1(sha1(key)+id_order) signature."""
    placed = await market.place_order(PRODUCT, send_webhook=False)
    payload = market.webhook_payload(placed.id_order)
    assert payload == placed.payload
    assert list(payload) == ["id_order", "id_product", "payment_status", "signature", "delivery_url", "token"]
    assert len(payload["id_order"]) == 32 and int(payload["id_order"], 16) >= 0
    assert len(payload["token"]) == 64 and int(payload["token"], 16) >= 0
    assert payload["payment_status"] == "paid"
    assert payload["signature"] == expected_signature(KEY, placed.id_order)
    assert payload["delivery_url"] == f"{market.api_base}/orders/delivery/{placed.token}"


async def test_webhook_is_posted_to_seller(market: SoftStoreMarketplace, receiver: Receiver) -> None:
    """place_order POSTs the signed JSON payload to seller_url and reports the answer status."""
    market.seller_url = receiver.url
    receiver.status = 202
    placed = await market.place_order(PRODUCT, 2)
    assert placed.webhook_status == 202
    assert receiver.payloads == [placed.payload]
    assert receiver.content_types == ["application/json"]
    assert receiver.payloads[0]["signature"] == expected_signature(KEY, placed.id_order)
    resent = await market.send_webhook(placed.id_order, overrides={"signature": "0" * 40}, omit=["token"])
    assert resent.status_code == 202
    assert receiver.payloads[1]["signature"] == "0" * 40 and "token" not in receiver.payloads[1]


async def test_webhook_unreachable_seller_leaves_status_none(market: SoftStoreMarketplace) -> None:
    """An unreachable seller does not fail place_order; webhook_status is None and the error recorded."""
    async with serve(Starlette()) as gone:
        url = gone.url + "/webhook"
    market.seller_url = url
    placed = await market.place_order(PRODUCT)
    assert placed.webhook_status is None
    assert market.webhooks[-1].error is not None
    assert placed.id_order in market.orders


async def test_webhook_transport_is_injectable_and_not_closed(market: SoftStoreMarketplace) -> None:
    """An injected webhook transport is used for every webhook and survives each send."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    m = SoftStoreMarketplace(
        api_key=KEY, seller_url="http://seller.invalid/hook", webhook_transport=httpx.MockTransport(handler)
    )
    m.bind("http://market.invalid")
    m.add_product("p")
    assert (await m.place_order("p")).webhook_status == 200
    assert (await m.place_order("p")).webhook_status == 200
    assert [r.method for r in seen] == ["POST", "POST"]
    assert seen[0].headers["content-type"] == "application/json"


# -- faults -----------------------------------------------------------------------------------------------


async def test_fault_fail_next_deliveries(market: SoftStoreMarketplace, api: httpx.AsyncClient) -> None:
    """fail_next_deliveries answers the status (429 with Retry-After: 1) without delivering, in order."""
    placed = await market.place_order(PRODUCT, send_webhook=False)
    auth = await login(api)
    market.faults.fail_next_deliveries(1, status=503)
    market.faults.fail_next_deliveries(1, status=429)
    first = await deliver(api, auth, placed.token, {"text": "K"})
    second = await deliver(api, auth, placed.token, {"text": "K"})
    assert first.status_code == 503 and "retry-after" not in first.headers
    assert second.status_code == 429 and second.headers["retry-after"] == "1"
    assert not market.orders[placed.id_order].delivered
    assert (await deliver(api, auth, placed.token, {"text": "K"})).status_code == 200
    assert [d.fault for d in market.deliveries(placed.id_order)] == ["fail", "fail", None]
    assert market.faults.injected["delivery_fail"] == 2


async def test_fault_drop_next_deliveries(market: SoftStoreMarketplace, api: httpx.AsyncClient) -> None:
    """drop_next_deliveries closes the connection with no response; the client sees a transport error."""
    placed = await market.place_order(PRODUCT, send_webhook=False)
    auth = await login(api)
    market.faults.drop_next_deliveries(1)
    with pytest.raises(httpx.RemoteProtocolError):
        await deliver(api, auth, placed.token, {"text": "K"})
    assert not market.orders[placed.id_order].delivered
    assert market.requests[-1].status == 0
    assert (await deliver(api, auth, placed.token, {"text": "K"})).status_code == 200
    assert [(d.status, d.fault) for d in market.deliveries(placed.id_order)] == [(0, "drop"), (200, None)]
    assert market.faults.injected["delivery_drop"] == 1


async def test_fault_slow_delivery_commits_then_answers_late(
    market: SoftStoreMarketplace, api: httpx.AsyncClient
) -> None:
    """slow_next_deliveries delivers at once but answers late, so a concurrent retry gets 409 first."""
    placed = await market.place_order(PRODUCT, send_webhook=False)
    auth = await login(api)
    market.faults.slow_next_deliveries(1, 0.4)
    started = time.monotonic()
    slow = asyncio.create_task(deliver(api, auth, placed.token, {"text": "K"}))
    for _ in range(300):  # the slow request commits long before it answers
        if market.orders[placed.id_order].delivered:
            break
        await asyncio.sleep(0.01)
    retry = await deliver(api, auth, placed.token, {"text": "K"})
    assert retry.status_code == 409 and not slow.done()
    assert (await slow).status_code == 200
    assert time.monotonic() - started >= 0.4
    assert [d.status for d in market.deliveries(placed.id_order)] == [200, 409]


async def test_fault_expire_tokens(market: SoftStoreMarketplace, api: httpx.AsyncClient) -> None:
    """expire_tokens invalidates every token issued so far; a fresh token works."""
    first, second = await login(api), await login(api)
    market.faults.expire_tokens()
    assert (await api.get("/orders", headers=first)).status_code == 401
    assert (await api.get("/orders", headers=second)).status_code == 401
    assert (await api.get("/orders", headers=await login(api))).status_code == 200
    assert market.faults.injected["tokens_expired"] == 1


async def test_fault_down(market: SoftStoreMarketplace, api: httpx.AsyncClient) -> None:
    """While down every /api/v1 request answers 503; back up, it serves again."""
    auth = await login(api)
    market.faults.down(True)
    assert (await api.get("/orders", headers=auth)).status_code == 503
    down_auth = await api.post("/auth/api-key/create", headers={"X-API-KEY": KEY})
    assert down_auth.status_code == 503 and down_auth.json()["status"] == "error"
    market.faults.down(False)
    assert (await api.get("/orders", headers=auth)).status_code == 200
    assert market.faults.injected["down"] == 2


async def test_fault_fail_next_order_info(market: SoftStoreMarketplace, api: httpx.AsyncClient) -> None:
    """fail_next_order_info answers the status for the next n order-info calls."""
    placed = await market.place_order(PRODUCT, send_webhook=False)
    auth = await login(api)
    market.faults.fail_next_order_info(2, status=502)
    statuses = [(await api.get(f"/orders/info/{placed.id_order}", headers=auth)).status_code for _ in range(3)]
    assert statuses == [502, 502, 200]
    assert market.faults.injected["order_info_fail"] == 2


# -- seller and products ----------------------------------------------------------------------------------


async def test_seller_info_and_profile_update(market: SoftStoreMarketplace, api: httpx.AsyncClient) -> None:
    """GET /seller has the documented fields; POST /seller/profile updates them and api_url is the webhook URL."""
    auth = await login(api)
    data = (await api.get("/seller", headers=auth)).json()["data"]
    assert {
        "id",
        "id_user",
        "name",
        "balance",
        "img",
        "description",
        "api_url",
        "data_create",
        "rating",
        "api_key",
        "status_moderation",
    } == set(data)
    body = {
        "name": "My New Store Name",
        "description": "Updated <b>store</b> description",
        "api_url": "http://127.0.0.1:9/webhook",
    }
    response = await api.post("/seller/profile", headers=auth, json=body)
    assert response.status_code == 200
    assert response.json()["data"] == {
        "id": 1,
        "name": "My New Store Name",
        "description": "Updated store description",
        "api_url": "http://127.0.0.1:9/webhook",
    }
    assert market.seller_url == "http://127.0.0.1:9/webhook"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"balance": 5}, "Field 'balance' is not allowed"),
        ({"name": "ok name", "rating": 5}, "Field 'rating' is not allowed"),
        ({"colour": "red"}, "Field 'colour' is not allowed"),
        ({}, "No valid data to update"),
        ({"name": "ab"}, "Name must be between 3 and 100 characters"),
        ({"name": "x" * 101}, "Name must be between 3 and 100 characters"),
        ({"description": "short"}, "Description too short (min 10)"),
        ({"api_url": "not a url"}, "Invalid API URL"),
        ({"api_url": "ftp://example.com"}, "Invalid API URL"),
        ([1, 2], "Invalid JSON"),
    ],
)
async def test_seller_profile_validation(api: httpx.AsyncClient, body: Any, message: str) -> None:
    """POST /seller/profile rejects restricted/unknown/invalid fields with the documented 400 messages."""
    response = await api.post("/seller/profile", headers=await login(api), json=body)
    assert response.status_code == 400
    assert response.json() == {"status": "error", "message": message}


async def test_product_info(api: httpx.AsyncClient) -> None:
    """GET /products/info/{id} answers the documented product object; unknown ids answer 404."""
    auth = await login(api)
    product = (await api.get(f"/products/info/{PRODUCT}", headers=auth)).json()["data"]["product"]
    assert product["id"] == PRODUCT and product["price"] == 128 and product["count"] == 50
    assert set(product) == {"id", "name", "price", "count", "discount", "uuid", "status_moderation", "created_at"}
    missing = await api.get("/products/info/nope", headers=auth)
    assert (missing.status_code, missing.json()["message"]) == (404, "Product not found")


async def test_product_update_moderation_flag(api: httpx.AsyncClient) -> None:
    """Plain fields update without moderation; moderated fields answer moderation true and status wait."""
    auth = await login(api)
    plain = await api.post(
        f"/products/update/{PRODUCT}",
        headers=auth,
        json={"price": 999, "discount": 15, "count": 200, "api_url": "https://e.com/api"},
    )
    assert plain.json() == {"status": "success", "data": {"message": "Product updated", "moderation": False}}
    info = (await api.get(f"/products/info/{PRODUCT}", headers=auth)).json()["data"]["product"]
    assert (info["price"], info["discount"], info["count"], info["status_moderation"]) == (999, 15, 200, "approved")
    moderated = await api.post(f"/products/update/{PRODUCT}", headers=auth, json={"name": "Updated Product Name"})
    assert moderated.json()["data"] == {"message": "Product updated", "moderation": True}
    info = (await api.get(f"/products/info/{PRODUCT}", headers=auth)).json()["data"]["product"]
    assert (info["name"], info["status_moderation"]) == ("Updated Product Name", "wait")


@pytest.mark.parametrize(
    ("product", "body", "status", "message"),
    [
        (PRODUCT, {}, 400, "No fields to update"),
        (PRODUCT, {"rating": 5}, 400, "Field 'rating' is not allowed"),
        (PRODUCT, {"status_moderation": "approved"}, 400, "Field 'status_moderation' is not allowed"),
        (PRODUCT, {"price": 0}, 400, "Invalid price"),
        (PRODUCT, {"price": "12"}, 400, "Invalid price"),
        ("missing", {"price": 5}, 404, "Product not found or access denied"),
    ],
)
async def test_product_update_rejections(
    api: httpx.AsyncClient, product: str, body: Any, status: int, message: str
) -> None:
    """POST /products/update/{id} rejects empty, restricted and invalid updates and unknown products."""
    response = await api.post(f"/products/update/{product}", headers=await login(api), json=body)
    assert (response.status_code, response.json()) == (status, {"status": "error", "message": message})


# -- bookkeeping and control ------------------------------------------------------------------------------


async def test_requests_records_only_api_calls(
    market: SoftStoreMarketplace, api: httpx.AsyncClient, control: httpx.AsyncClient
) -> None:
    """requests records every /api/v1 call (method, path, headers, body, json, status) and no control call."""
    auth = await login(api)
    await api.post("/seller/profile", headers=auth, json={"name": "Shop name"})
    await api.get("/no/such/route", headers=auth)
    await control.get("/summary")
    assert [(r.method, r.path, r.status) for r in market.requests] == [
        ("POST", "/api/v1/auth/api-key/create", 200),
        ("POST", "/api/v1/seller/profile", 200),
        ("GET", "/api/v1/no/such/route", 404),
    ]
    profile = market.requests[1]
    assert profile.json == {"name": "Shop name"} and profile.body == b'{"name":"Shop name"}'
    assert profile.headers["authorization"].startswith("Bearer ")
    assert profile.at == market.clock()


async def test_control_endpoints_drive_the_marketplace(
    market: SoftStoreMarketplace, api: httpx.AsyncClient, control: httpx.AsyncClient, receiver: Receiver
) -> None:
    """The /_reference API adds products, places orders with webhooks, arms faults and summarises."""
    market.seller_url = receiver.url
    assert (await control.post("/products", json={"id_product": "p2", "name": "Other", "count": 3})).status_code == 201
    placed = (await control.post("/orders", json={"id_product": "p2", "count": 2})).json()
    assert placed["webhook_status"] == 200 and receiver.payloads == [placed["payload"]]
    assert placed["payload"]["signature"] == expected_signature(KEY, placed["id_order"])
    resent = await control.post(f"/orders/{placed['id_order']}/webhook", json={"overrides": {"id_product": "x"}})
    assert resent.json()["webhook_status"] == 200 and receiver.payloads[-1]["id_product"] == "x"
    faults = await control.post("/faults", json={"fail_next_deliveries": 1, "status": 500})
    assert faults.json()["pending"]["deliveries"] == ["fail"]
    updates = await control.post("/faults", json={"fail_next_product_updates": 2, "status": 502})
    assert updates.json()["pending"]["product_updates"] == 2
    auth = await login(api)
    assert (await deliver(api, auth, placed["token"], {"text": "K"})).status_code == 500
    assert (await deliver(api, auth, placed["token"], {"text": "K"})).status_code == 200
    assert (await deliver(api, auth, placed["token"], {"text": "K"})).status_code == 409
    view = (await control.get(f"/orders/{placed['id_order']}")).json()
    assert view["order"]["delivered"] is True
    assert [d["status"] for d in view["deliveries"]] == [500, 200, 409]
    assert view["accepted"]["json"] == {"text": "K"}
    await control.post("/faults", json={"expire_tokens": True})
    assert (await api.get("/orders", headers=auth)).status_code == 401
    summary = (await control.get("/summary")).json()
    assert summary["orders"] == 1 and summary["delivered"] == 1
    assert summary["deliveries_attempted"] == 3 and summary["duplicates"] == 0 and summary["conflicts_409"] == 1
    assert summary["faults_injected"]["delivery_fail"] == 1 and summary["faults_injected"]["tokens_expired"] == 1


async def test_control_rejects_bad_input(control: httpx.AsyncClient) -> None:
    """Control endpoints answer 404 for unknown products/orders and 400 for malformed fault requests."""
    assert (await control.post("/orders", json={"id_product": "nope"})).status_code == 404
    assert (await control.get("/orders/" + "0" * 32)).status_code == 404
    assert (await control.post("/faults", json={"explode": 1})).status_code == 400
    assert (await control.post("/faults", json={"slow_next_deliveries": 1})).status_code == 400


async def test_control_down_and_drop(
    market: SoftStoreMarketplace, api: httpx.AsyncClient, control: httpx.AsyncClient
) -> None:
    """Faults armed through /_reference/faults (down, drop, slow) take effect on the API."""
    await control.post("/faults", json={"down": True})
    assert (await api.post("/auth/api-key/create", headers={"X-API-KEY": KEY})).status_code == 503
    await control.post("/faults", json={"down": False, "drop_next_deliveries": 1})
    placed = await market.place_order(PRODUCT, send_webhook=False)
    with pytest.raises(httpx.TransportError):
        await deliver(api, await login(api), placed.token, {"text": "K"})
    await control.post("/faults", json={"slow_next_deliveries": 1, "seconds": 0.05})
    assert market.faults.pending()["deliveries"] == ["slow"]


async def test_run_marketplace_serves_and_logs_no_secrets() -> None:
    """run_marketplace serves until cancelled and logs reference.started with its URL but no secrets."""
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(
            run_marketplace(host="127.0.0.1", port=0, api_key=KEY, seller_url=None, products=["p1", "p2"])
        )
        for _ in range(3000):  # generous: the full suite runs on a loaded 2-core machine
            if any(entry["event"] == "reference.started" for entry in logs):
                break
            await asyncio.sleep(0.01)
        started = next(entry for entry in logs if entry["event"] == "reference.started")
        async with httpx.AsyncClient(base_url=started["url"], timeout=30) as client:
            summary = (await client.get("/_reference/summary")).json()
            token = (await client.post("/api/v1/auth/api-key/create", headers={"X-API-KEY": KEY})).json()
            placed = (await client.post("/_reference/orders", json={"id_product": "p1"})).json()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert summary["orders"] == 0 and placed["webhook_status"] is None
    text = repr(logs)
    for secret in (KEY, token["access_token"], placed["token"], placed["payload"]["signature"]):
        assert secret not in text


async def test_fault_fail_next_product_updates(market: SoftStoreMarketplace, api: httpx.AsyncClient) -> None:
    """fail_next_product_updates(1, 503): the next product update answers 503 and changes nothing, then works."""
    auth = await login(api)
    market.faults.fail_next_product_updates(1, 503)
    failed = await api.post(f"/products/update/{PRODUCT}", headers=auth, json={"count": 3})
    assert failed.status_code == 503
    assert market.products[PRODUCT].count != 3
    ok = await api.post(f"/products/update/{PRODUCT}", headers=auth, json={"count": 3})
    assert ok.status_code == 200 and market.products[PRODUCT].count == 3
    assert market.faults.injected["product_update_fail"] == 1
