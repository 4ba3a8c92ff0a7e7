"""End to end over real loopback sockets: the reference SoftStore marketplace ⇄ the daemon.

The worker is driven in burst mode (``stack.drain()``) with the daemon's ManualClock advanced to make retries due,
except in the test of the live worker's wake-up.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from delivery_daemon.http.serving import serve
from delivery_daemon.order import Content
from tests.support.stack import PRODUCT, Stack

MakeStack = Callable[..., AbstractAsyncContextManager[Stack]]


async def place(stack: Stack, count: int = 1, **kwargs: Any) -> str:
    """Place a paid order whose webhook the daemon accepts; returns its id."""
    placed = await stack.market.place_order(PRODUCT, count, **kwargs)
    if kwargs.get("send_webhook", True):
        assert placed.webhook_status == 200
    return placed.id_order


async def history(stack: Stack, order_id: str) -> list[tuple[str, str, int | None]]:
    job = await stack.job(order_id)
    return [(a.step, a.outcome, a.http_status) for a in await stack.daemon.queue.history(job.id)]


async def assert_nothing_stored(stack: Stack) -> None:
    counts = await stack.daemon.queue.counts()
    assert sum(counts.values()) == 0, counts


# -- the happy path ---------------------------------------------------------------------------------------------


async def test_quantities_deliver_rendered_keys(stack: Stack) -> None:
    """Orders of 1, 2 and 3 units get that many keys (as the marketplace's order info says) in the template."""
    orders = {count: await place(stack, count) for count in (1, 2, 3)}
    assert await stack.drain() == 3
    for count, order_id in orders.items():
        job = await stack.job(order_id)
        assert (job.state, job.quantity) == ("delivered", count)
        keys = Content.from_json(job.content).keys
        assert len(keys) == count and len(set(keys)) == count
        accepted = stack.market.accepted(order_id)
        assert accepted is not None
        assert accepted.json == {"text": f"Keys for {order_id}:\n" + "\n".join(keys)}
        assert len(stack.market.deliveries(order_id)) == 1


async def test_quantity_comes_from_order_info(stack: Stack) -> None:
    """The delivered key count follows the marketplace API, not anything the webhook could claim."""
    order_id = await place(stack, 1)
    stack.market.orders[order_id].count = 3
    await stack.drain()
    assert len(Content.from_json((await stack.job(order_id)).content).keys) == 3


async def test_same_webhook_three_times_concurrently(stack: Stack) -> None:
    """Three concurrent copies of one webhook make one job and one delivery."""
    order_id = await place(stack, send_webhook=False)
    answers = await asyncio.gather(*(stack.market.send_webhook(order_id) for _ in range(3)))
    assert [r.status_code for r in answers] == [200, 200, 200]
    assert sorted(r.json()["duplicate"] for r in answers) == [False, True, True]
    job = await stack.job(order_id)
    assert job.received == 3
    assert await stack.drain() == 1
    assert await stack.drain() == 0
    assert len(stack.market.deliveries(order_id)) == 1
    assert stack.market.accepted(order_id) is not None


# -- refused webhooks -------------------------------------------------------------------------------------------


async def test_forged_signature_is_403_and_not_queued(stack: Stack) -> None:
    """A webhook signed with the wrong key answers 403 with a JSON reason and stores nothing."""
    order_id = await place(stack, send_webhook=False)
    forged = hashlib.sha1((hashlib.sha1(b"wrong-key").hexdigest() + order_id).encode()).hexdigest()
    response = await stack.market.send_webhook(order_id, overrides={"signature": forged})
    assert response.status_code == 403
    assert response.json() == {"error": "invalid signature"}
    await assert_nothing_stored(stack)


async def test_bad_requests_answer_json_and_store_nothing(stack: Stack) -> None:
    """Malformed JSON 400, wrong content type 415, unknown store 404 — each with a JSON reason, nothing stored."""
    order_id = await place(stack, send_webhook=False)
    good = stack.market.webhook_payload(order_id)
    cases = [
        (await stack.post(b'{"id_order": '), 400),
        (await stack.post(b"[1, 2]"), 400),
        (await stack.post({k: v for k, v in good.items() if k != "delivery_url"}), 400),
        (await stack.post(good, content_type="text/plain"), 415),
        (await stack.post(json.dumps(good).encode(), content_type="application/x-www-form-urlencoded"), 415),
        (await stack.post(good, store="no-such-store"), 404),
    ]
    for response, status in cases:
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/json"
        assert isinstance(response.json()["error"], str) and response.json()["error"]
    await assert_nothing_stored(stack)


async def test_oversized_body_declared_is_413(stack: Stack) -> None:
    """A body whose Content-Length is over the cap is refused with 413 and nothing stored."""
    order_id = await place(stack, send_webhook=False)
    payload = {**stack.market.webhook_payload(order_id), "padding": "x" * (70 * 1024)}
    response = await stack.post(payload)
    assert response.status_code == 413
    assert "larger than" in response.json()["error"]
    await assert_nothing_stored(stack)


async def test_oversized_body_streamed_chunked_is_413(stack: Stack) -> None:
    """A chunked body with no Content-Length is cut off at the cap with 413 and nothing stored."""
    order_id = await place(stack, send_webhook=False)
    raw = json.dumps({**stack.market.webhook_payload(order_id), "padding": "x" * (70 * 1024)}).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(raw), 4096):
            yield raw[start : start + 4096]

    request = stack.client.build_request(
        "POST", stack.webhook_url, content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert "content-length" not in request.headers
    assert request.headers["transfer-encoding"] == "chunked"
    response = await stack.client.send(request)
    assert response.status_code == 413
    assert "larger than" in response.json()["error"]
    await assert_nothing_stored(stack)


async def test_rewritten_delivery_url_is_refused_and_never_contacted(stack: Stack) -> None:
    """A correctly signed webhook whose delivery_url points at another host is refused (422); it is never called."""
    contacted: list[str] = []

    async def anything(request: Request) -> JSONResponse:
        contacted.append(request.url.path)
        return JSONResponse({"status": "success"})

    trap = Starlette(routes=[Route("/{path:path}", anything, methods=["GET", "POST"])])
    async with serve(trap, port=0) as other:
        placed = await stack.market.place_order(PRODUCT, send_webhook=False)
        evil = f"{other.url}/api/v1/orders/delivery/{placed.token}"
        response = await stack.market.send_webhook(placed.id_order, overrides={"delivery_url": evil})
        assert response.status_code == 422
        assert "delivery_url" in response.json()["error"]
        await assert_nothing_stored(stack)
        assert await stack.drain() == 0
        assert contacted == []
    assert stack.market.deliveries(placed.id_order) == []
    assert "security.delivery_url_refused" in stack.logs.getvalue()


# -- delivery outcomes ------------------------------------------------------------------------------------------


async def test_5xx_three_times_then_accepted_sends_identical_bytes(stack: Stack) -> None:
    """Three 5xx answers, then success: delivered once, and every attempt carried byte-identical content."""
    order_id = await place(stack, 2)
    stack.market.faults.fail_next_deliveries(2, status=500)
    stack.market.faults.fail_next_deliveries(1, status=503)
    assert await stack.drain() == 1
    for wait in (5, 300):
        assert await stack.advance_and_drain(wait - 0.01) == 0  # not due yet
        assert await stack.advance_and_drain(0.01) == 1
    assert await stack.advance_and_drain(1800) == 1
    deliveries = stack.market.deliveries(order_id)
    assert [d.status for d in deliveries] == [500, 500, 503, 200]
    assert len({d.body for d in deliveries}) == 1
    job = await stack.job(order_id)
    assert (job.state, job.attempts) == ("delivered", 4)
    assert [o for _s, o, _h in await history(stack, order_id)].count("retry") == 3


async def test_expired_jwt_is_refreshed(stack: Stack) -> None:
    """When the marketplace stops honouring the cached JWT, the daemon gets a new one and delivers."""
    first = await place(stack)
    await stack.drain()
    stale = stack.daemon.stores["shop"].marketplace.tokens.current  # type: ignore[attr-defined]  # SoftStore's adapter has tokens
    stack.market.faults.expire_tokens()
    second = await place(stack)
    assert await stack.drain() == 1
    assert stack.market.accepted(first) is not None and stack.market.accepted(second) is not None
    assert stack.daemon.stores["shop"].marketplace.tokens.current != stale  # type: ignore[attr-defined]  # SoftStore's adapter has tokens
    assert (await stack.job(second)).state == "delivered"
    assert "marketplace.token_refreshed" in stack.logs.getvalue()


async def test_409_already_delivered_counts_as_delivered(stack: Stack) -> None:
    """A 409 "already delivered" ends the job as delivered, recorded as ``already``."""
    order_id = await place(stack)
    stack.market.orders[order_id].delivered = True
    await stack.drain()
    job = await stack.job(order_id)
    assert job.state == "delivered"
    assert ("deliver", "already", 409) in await history(stack, order_id)


async def test_422_is_dead_with_marketplace_message(stack: Stack) -> None:
    """A 422 from the marketplace is final: the job is dead and keeps the marketplace's message."""
    order_id = await place(stack)
    stack.market.faults.fail_next_deliveries(1, status=422)
    await stack.drain()
    job = await stack.job(order_id)
    assert job.state == "dead"
    assert "422" in job.last_error and "Temporary failure (injected)" in job.last_error
    assert await stack.advance_and_drain(100_000) == 0


async def test_unpaid_order_is_dead_and_not_delivered(stack: Stack) -> None:
    """An order the marketplace reports unpaid is never generated nor delivered."""
    order_id = await place(stack)
    stack.market.set_order_status(order_id, "wait")
    await stack.drain()
    job = await stack.job(order_id)
    assert (job.state, job.content) == ("dead", None)
    assert "not paid" in job.last_error
    assert stack.market.deliveries(order_id) == []


async def test_429_retry_after_is_honoured(make_stack: MakeStack) -> None:
    """A 429 with Retry-After: 1 is not retried before a second has passed, even if the schedule says sooner."""
    async with make_stack(delivery={"retry_schedule": [0.25, 300, 1800]}) as stack:
        order_id = await place(stack)
        stack.market.faults.fail_next_deliveries(1, status=429)
        await stack.drain()
        assert (await stack.job(order_id)).state == "retry_wait"
        assert await stack.advance_and_drain(0.5) == 0
        assert await stack.advance_and_drain(0.5) == 1
        assert [d.status for d in stack.market.deliveries(order_id)] == [429, 200]
        assert ("deliver", "retry", 429) in await history(stack, order_id)


async def test_dropped_connection_is_retried(stack: Stack) -> None:
    """A delivery whose connection is dropped without an answer is retried and then delivered."""
    order_id = await place(stack)
    stack.market.faults.drop_next_deliveries(1)
    await stack.drain()
    job = await stack.job(order_id)
    assert job.state == "retry_wait"
    assert "connection" in job.last_error.lower()
    assert await stack.advance_and_drain(5) == 1
    assert (await stack.job(order_id)).state == "delivered"
    assert stack.market.accepted(order_id) is not None


async def test_after_last_scheduled_attempt_is_dead(stack: Stack) -> None:
    """Failing every attempt of the schedule (1 + 3 retries) ends dead, and nothing is tried after."""
    order_id = await place(stack)
    stack.market.faults.fail_next_deliveries(10, status=500)
    await stack.drain()
    for wait in (5, 300, 1800):
        assert await stack.advance_and_drain(wait) == 1
    job = await stack.job(order_id)
    assert (job.state, job.attempts) == ("dead", 4)
    assert job.last_error.startswith("gave up after 4 attempts")
    assert await stack.advance_and_drain(100_000) == 0
    assert len(stack.market.deliveries(order_id)) == 4


# -- the live worker and health ---------------------------------------------------------------------------------


async def wait_for(predicate: Callable[[], bool]) -> None:
    """Poll ``predicate`` until true; the caller bounds the wait with ``asyncio.timeout`` (generous under load)."""
    while not predicate():  # noqa: ASYNC110  (the marketplace records deliveries; it exposes no event)
        await asyncio.sleep(0.02)


async def test_worker_wakes_at_once_on_commit(make_stack: MakeStack) -> None:
    """With a 60 s poll interval, a committed job is still delivered within seconds (the receiver wakes it)."""
    async with make_stack(start_worker=True) as stack:
        assert stack.settings.worker.poll_interval == 60
        order_id = await place(stack)
        async with asyncio.timeout(15):  # far below the 60 s poll interval
            await wait_for(lambda: stack.market.accepted(order_id) is not None)


async def test_healthz_and_readyz(make_stack: MakeStack) -> None:
    """/healthz answers while up; /readyz is 503 without a running worker and 200 with one."""
    async with make_stack() as stack:
        assert (await stack.client.get(f"{stack.url}/healthz")).json() == {"status": "ok"}
        response = await stack.client.get(f"{stack.url}/readyz")
        assert response.status_code == 503
        assert "worker not running" in response.json()["problems"]
    async with make_stack(start_worker=True) as stack:
        response = await stack.client.get(f"{stack.url}/readyz")
        assert (response.status_code, response.json()) == (200, {"status": "ready"})


# -- secrets ----------------------------------------------------------------------------------------------------


async def test_no_secret_in_logs_or_error_bodies(stack: Stack) -> None:
    """Across success, retry, refusal and dead paths no API key, JWT, token or generated key is logged or answered."""
    bodies: list[str] = []
    delivered = await place(stack, 2)
    stack.market.faults.fail_next_deliveries(1, status=500)
    retried = await place(stack)
    stack.market.faults.fail_next_deliveries(1, status=422)  # consumed by one of the two
    await stack.drain()
    stack.market.faults.expire_tokens()
    await stack.advance_and_drain(5)
    unpaid = await place(stack)
    stack.market.set_order_status(unpaid, "wait")
    await stack.drain()
    forged = await stack.market.place_order(PRODUCT, send_webhook=False)
    for overrides in ({"signature": "0" * 40}, {"delivery_url": "http://127.0.0.1:9/x"}):
        bodies.append((await stack.market.send_webhook(forged.id_order, overrides=overrides)).text)
    bodies.append((await stack.post(b"{")).text)

    secrets = {stack.api_key, hashlib.sha1(stack.api_key.encode()).hexdigest()}
    secrets.update(stack.market._jwts)  # every JWT the marketplace issued
    secrets.update(order.token for order in stack.market.orders.values())
    for order_id in (delivered, retried, unpaid):
        job = await stack.job(order_id)
        if job.content is not None:
            secrets.update(Content.from_json(job.content).keys)
    assert len(secrets) > 8
    states = {(await stack.job(o)).state for o in (delivered, retried, unpaid)}
    assert states == {"delivered", "dead"}
    logs = stack.logs.getvalue()
    assert "delivery.retry_scheduled" in logs and "delivery.dead" in logs and "delivery.succeeded" in logs
    for secret in secrets:
        assert secret not in logs, "a secret reached the log"
        assert all(secret not in body for body in bodies), "a secret reached an error body"


async def test_refused_webhook_error_body_has_no_request_echo(stack: Stack) -> None:
    """An error body states the reason only; it never echoes the (secret-bearing) request."""
    order_id = await place(stack, send_webhook=False)
    payload = stack.market.webhook_payload(order_id)
    response = await stack.post({**payload, "signature": "f" * 40})
    assert response.status_code == 403
    assert payload["token"] not in response.text and order_id not in response.text


async def test_acknowledged_webhook_is_already_committed(stack: Stack) -> None:
    """The 200 comes after the job is committed: a job exists as soon as the webhook is acknowledged."""
    placed = await stack.market.place_order(PRODUCT, send_webhook=False)
    async with httpx.AsyncClient() as client:
        response = await client.post(stack.webhook_url, json=stack.market.webhook_payload(placed.id_order))
    assert response.status_code == 200
    assert (await stack.job(placed.id_order)).state == "queued"
