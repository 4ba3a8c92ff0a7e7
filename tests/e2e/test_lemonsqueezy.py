"""Lemon Squeezy and Polar end to end over loopback sockets: the reference Lemon Squeezy signs and retries its
webhooks as documented (4 tries in ~2.5 min, then dropped), the daemon verifies each order through the reference
API, delivers once through the webhook channel, refuses forgeries, treats resends as duplicates and refunds as
refunds; past the last try the daemon's missed-order watchdog finds the order through the order list; Polar's
retries end in one stored event."""

from __future__ import annotations

import json
from pathlib import Path

from delivery_daemon.reference.lemonsqueezy import signed_headers, webhook_body
from delivery_daemon.reference.polar import FIRST_BACKOFF, RETRIES, PolarSender, order
from delivery_daemon.reference.sender import UNANSWERED
from delivery_daemon.watchdog.findings import Outcome, StoreReport
from tests.support.lemonsqueezy import LS_STORE, POLAR_STORE, lemon_stack
from tests.support.multistore import free_port, post


async def test_paid_order_is_verified_and_delivered_once(tmp_path: Path) -> None:
    """order_created is stored, confirmed by GET /v1/orders/{id} and delivered with the API's quantity, once."""
    async with lemon_stack(tmp_path) as stack:
        order_id = stack.market.place("55", quantity=2, email="ann@example.org")
        assert await stack.market.pump() == 1
        [hook] = stack.market.webhooks
        assert hook.delivered and hook.tries == [200]
        await stack.drain()
        job = await stack.job(order_id)
        assert job.state == "delivered" and job.quantity == 2 and job.product_id == "55"
        assert (f"/v1/orders/{order_id}", 200) in stack.market.requests
        [delivery] = stack.seller.accepted()
        assert delivery.body["data"]["buyer_email"] == "ann@example.org" and len(delivery.body["data"]["keys"]) == 2


async def test_variant_listed_on_its_own_uses_its_product(tmp_path: Path) -> None:
    """An order of product 77 variant 8 uses the store's "77:8" product (its own pattern)."""
    async with lemon_stack(tmp_path) as stack:
        order_id = stack.market.place("77", variant_id="8")
        await stack.market.pump()
        await stack.drain()
        job = await stack.job(order_id)
        assert job.product_id == "77:8" and job.state == "delivered"
        assert stack.seller.accepted()[0].body["data"]["keys"][0].startswith("PRO-")


async def test_forged_signature_is_refused_and_stores_nothing(tmp_path: Path) -> None:
    """A body signed with another secret, or unsigned, is answered 403 with a JSON reason; no job."""
    async with lemon_stack(tmp_path) as stack:
        order_id = stack.market.place("55", send=False)
        body = webhook_body("order_created", stack.market.orders[order_id])
        forged = await post(stack.hook(), body, signed_headers("not-the-secret", body, "order_created"))
        assert forged.status_code == 403 and forged.json()["error"] == "invalid signature"
        unsigned = await post(stack.hook(), body, {"X-Event-Name": "order_created"})
        assert unsigned.status_code == 403 and "X-Signature" in unsigned.json()["error"]
        assert await stack.job(order_id) is None


async def test_duplicate_webhook_makes_one_job(tmp_path: Path) -> None:
    """The same order_created sent twice (a retry whose first answer was lost) is one job, one delivery."""
    async with lemon_stack(tmp_path) as stack:
        order_id = stack.market.place("55")
        stack.market.queue("order_created", order_id)
        assert await stack.market.pump() == 2
        answers = [hook.tries for hook in stack.market.webhooks]
        assert answers == [[200], [200]]
        await stack.drain()
        job = await stack.job(order_id)
        assert job.state == "delivered" and len(stack.seller.accepted()) == 1
        assert "webhook.duplicate" in stack.logs.getvalue()


async def test_refund_before_delivery_cancels(tmp_path: Path) -> None:
    """order_refunded for a queued order cancels it: nothing is delivered, even when the paid webhook comes again."""
    async with lemon_stack(tmp_path) as stack:
        order_id = stack.market.place("55")
        await stack.market.pump()
        stack.market.refund(order_id)
        await stack.market.pump()
        assert stack.market.webhooks[-1].tries == [200]
        stack.market.queue("order_created", order_id)
        await stack.market.pump()
        assert await stack.drain() == 0
        assert (await stack.job(order_id)).state == "cancelled" and stack.seller.accepted() == []


async def test_refund_after_delivery_flags(tmp_path: Path) -> None:
    """order_refunded for a delivered order flags it refunded; the delivery is not repeated."""
    async with lemon_stack(tmp_path) as stack:
        order_id = stack.market.place("55")
        await stack.market.pump()
        await stack.drain()
        stack.market.refund(order_id)
        await stack.market.pump()
        job = await stack.job(order_id)
        assert job.state == "delivered" and job.flag == "refunded"
        assert len(stack.seller.accepted()) == 1
        assert "order.refunded" in stack.logs.getvalue()


async def test_refunded_since_the_webhook_is_not_delivered(tmp_path: Path) -> None:
    """An order the API shows refunded when it is verified (its refund webhook lost) is dead, not delivered."""
    async with lemon_stack(tmp_path) as stack:
        order_id = stack.market.place("55")
        await stack.market.pump()
        stack.market.refund(order_id)  # queued, never pumped
        await stack.drain()
        job = await stack.job(order_id)
        assert job.state == "dead" and "refunded" in job.last_error and stack.seller.accepted() == []


async def test_daemon_down_for_the_first_tries_still_gets_the_order(tmp_path: Path, db_url: str) -> None:
    """Down for tries 1 and 2 (connection refused), up for try 3 (30 s after the first): delivered once (SQLite and
    PostgreSQL)."""
    async with lemon_stack(tmp_path, database=db_url) as stack:
        stack.down()
        order_id = stack.market.place("55")
        await stack.market.pump()
        stack.clock.advance(5)
        await stack.market.pump()
        [hook] = stack.market.webhooks
        assert hook.tries == [0, 0] and hook.due == stack.clock.now() + 25
        stack.up()
        stack.clock.advance(24)
        assert await stack.market.pump() == 0  # not due yet
        stack.clock.advance(1)
        assert await stack.market.pump() == 1 and hook.tries == [0, 0, 200]
        await stack.drain()
        assert (await stack.job(order_id)).state == "delivered"


async def test_past_the_last_try_the_watchdog_delivers_it_once(tmp_path: Path, db_url: str) -> None:
    """Down for all four tries (0, 5, 30, 155 s): Lemon Squeezy drops the webhook. The daemon's scheduled watchdog
    run leaves the order alone while it is younger than watchdog.grace, then lists it through the orders API (paid
    orders only, this store's only), queues it, and the worker verifies and delivers it once with its 3 keys; the
    next run finds its job and queues nothing (SQLite and PostgreSQL)."""
    async with lemon_stack(tmp_path, database=db_url) as stack:
        watchdog = stack.daemon.watchdog
        assert watchdog is not None and watchdog.listed_stores() == [LS_STORE]
        stack.down()
        order_id = stack.market.place("55", quantity=3, email="lost@example.org")
        stack.market.place("55", status="pending")
        stack.market.place("55", store_id="999")
        for wait in (0, 5, 25, 125):
            stack.clock.advance(wait)
            await stack.market.pump()
        [hook, _, _] = stack.market.webhooks
        assert hook.tries == [0, 0, 0, 0]
        [early] = await watchdog.run_all()  # what the scheduler calls every watchdog.interval
        assert outcomes(early) == {order_id: Outcome.TOO_RECENT} and await stack.job(order_id) is None

        stack.clock.advance(600)
        await stack.market.pump()
        assert hook.dropped and hook.tries == [0, 0, 0, 0]
        [report] = await watchdog.run_all()
        assert report.store == LS_STORE and report.error is None
        assert outcomes(report) == {order_id: Outcome.QUEUED}
        assert any("filter[store_id]=1001" in path for path, _ in stack.market.requests)
        assert await stack.drain() == 1
        job = await stack.job(order_id)
        assert job.state == "delivered" and job.quantity == 3 and job.buyer_email == "lost@example.org"
        assert (f"/v1/orders/{order_id}", 200) in stack.market.requests

        stack.clock.advance(300)
        [again] = await watchdog.run_all()
        assert outcomes(again) == {order_id: Outcome.HAD_JOB} and await stack.drain() == 0
        [delivery] = stack.seller.accepted()
        assert delivery.body["data"]["order_id"] == order_id and len(delivery.body["data"]["keys"]) == 3


def outcomes(report: StoreReport) -> dict[str, Outcome]:
    return {finding.order_id: finding.outcome for finding in report.findings}


async def test_order_list_pages_oldest_first(tmp_path: Path) -> None:
    """With 3 orders a page, 7 orders since ``since`` come back oldest first over three pages, none twice, and
    older orders are left out."""
    async with lemon_stack(tmp_path) as stack:
        stack.market.place("55", send=False)
        stack.clock.advance(60)
        since = stack.clock.now()
        placed = []
        for _ in range(7):
            placed.append(stack.market.place("55", send=False))
            stack.clock.advance(1)
        stack.adapter.page_size = 3
        seen: list[str] = []
        cursor: str | None = None
        pages = 0
        while True:
            page = await stack.adapter.list_paid_orders(since, cursor)
            seen += [listed.order.order_id for listed in page.orders]
            pages += 1
            cursor = page.cursor
            if cursor is None:
                break
        assert seen == placed and pages == 3


async def test_polar_paid_duplicate_forged_and_refund(tmp_path: Path) -> None:
    """Polar's order.paid, signed with the secret as its dashboard shows it, is delivered once; the same webhook-id is
    a duplicate; a forged one is 403; order.refunded afterwards flags the order."""
    async with lemon_stack(tmp_path) as stack:
        sender = stack.polar()
        data = order("prod-1", "pat@example.org")
        first = await sender.send("order.paid", data, msg_id="msg_1")
        assert first.status_code == 200 and first.json()["duplicate"] is False
        replay = await sender.post(sender.sent[-1].body, dict(sender.sent[-1].headers))
        assert replay.json()["duplicate"] is True
        forged = PolarSender(stack.hook(POLAR_STORE), "polar_whs_" + "x" * 40, now=stack.clock.now)
        assert (await forged.send("order.paid", order("prod-1", order_id="forged-1"))).status_code == 403
        await stack.drain()
        job = await stack.job(str(data["id"]), POLAR_STORE)
        assert job.state == "delivered" and await stack.job("forged-1", POLAR_STORE) is None
        [delivery] = stack.seller.accepted()
        assert delivery.body["data"]["buyer_email"] == "pat@example.org"
        refund = await sender.send("order.refunded", {**data, "status": "refunded"})
        assert refund.status_code == 200
        assert (await stack.job(str(data["id"]), POLAR_STORE)).flag == "refunded"


async def test_polar_refund_before_delivery_cancels(tmp_path: Path) -> None:
    """order.refunded before the worker ran cancels the Polar order: nothing is delivered."""
    async with lemon_stack(tmp_path) as stack:
        sender = stack.polar()
        data = order("prod-1")
        await sender.send("order.paid", data)
        assert (await sender.send("order.refunded", data)).json()["status"] == "cancelled"
        assert await stack.drain() == 0 and stack.seller.accepted() == []


async def test_polar_retries_until_stored_once_and_a_resend_is_a_duplicate(tmp_path: Path) -> None:
    """order.paid finding the daemon unreachable for Polar's first two tries and refused (429) on the third is
    retried with exponential backoff under the same webhook-id, re-signed each time, and stored on the fourth; the
    stored event sent again is answered duplicate: one job, delivered once."""
    limits = {"store_rate_limits": {POLAR_STORE: {"per_second": 0.05, "burst": 1}}}
    async with lemon_stack(tmp_path, server=limits) as stack:
        sender = stack.polar()
        sender.url = f"http://127.0.0.1:{free_port()}/webhooks/{POLAR_STORE}"  # nobody listens: the daemon is down
        waited: list[float] = []
        other = order("prod-1", order_id="other-order")

        async def pause(seconds: float) -> None:
            waited.append(seconds)
            stack.clock.advance(seconds)
            if len(waited) == 2:  # the daemon is back, but another order takes the store's only token first
                sender.url = stack.hook(POLAR_STORE)
                assert (await stack.polar().send("order.paid", other)).status_code == 200

        data = order("prod-1", "pat@example.org")
        answers = await sender.deliver("order.paid", data, pause=pause)
        assert [a.status_code for a in answers] == [UNANSWERED, UNANSWERED, 429, 200]
        assert waited == [FIRST_BACKOFF, FIRST_BACKOFF * 2, FIRST_BACKOFF * 4]
        assert answers[-1].json()["duplicate"] is False
        [msg_id] = {s.headers["webhook-id"] for s in sender.sent}
        assert len({s.headers["webhook-timestamp"] for s in sender.sent}) == 2

        stack.clock.advance(60)  # the store's token is back: the resend is not rate limited
        again = await sender.deliver("order.paid", data, msg_id=msg_id, pause=pause)
        assert [a.status_code for a in again] == [200] and again[0].json()["status"] == "duplicate"
        assert await stack.drain() == 2
        assert (await stack.job(str(data["id"]), POLAR_STORE)).state == "delivered"
        mine = [r for r in stack.seller.accepted() if r.body["data"]["order_id"] == data["id"]]
        assert len(mine) == 1 and mine[0].body["data"]["buyer_email"] == "pat@example.org"


async def test_polar_gives_up_after_ten_retries(tmp_path: Path) -> None:
    """A daemon unreachable for good gets 11 tries (the first and Polar's 10 retries), each wait twice the one before,
    and then no more."""
    sender = PolarSender(f"http://127.0.0.1:{free_port()}/webhooks/{POLAR_STORE}", "polar_whs_" + "s" * 40)
    waited: list[float] = []

    async def pause(seconds: float) -> None:
        waited.append(seconds)

    answers = await sender.deliver("order.paid", order("prod-1"), pause=pause)
    assert [a.status_code for a in answers] == [UNANSWERED] * (RETRIES + 1)
    assert waited == [FIRST_BACKOFF * 2**n for n in range(RETRIES)]


def test_webhook_body_is_what_is_signed() -> None:
    """The reference's X-Signature is the hex HMAC-SHA256 of the exact body bytes with the signing secret."""
    import hashlib
    import hmac

    body = webhook_body("order_created", {"type": "orders", "id": "1", "attributes": {}})
    headers = signed_headers("s3cret-value", body, "order_created")
    assert headers["X-Signature"] == hmac.new(b"s3cret-value", body, hashlib.sha256).hexdigest()
    assert json.loads(body)["meta"]["event_name"] == headers["X-Event-Name"] == "order_created"
