"""A refund or dispute racing a delivery, over real sockets: a Stripe store delivering through the signed webhook
channel to the seller's system (:class:`~delivery_daemon.reference.standard_webhooks.SellerSystem`), which holds
the delivery request open while the refund webhook is sent and answered.

Every order of events is pinned (docs/guarantees.md, "Refunds and disputes"): before the order is received, before
any attempt, while the worker generates the keys, during the attempt (which succeeds or fails), after delivery.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from delivery_daemon.cli import main
from delivery_daemon.generators.contract import Generated, NoOptions, OrderContext
from delivery_daemon.reference.stripe_store import charge_refunded, dispute, event, payment_intent
from tests.support.multistore import Multi, multi_stack
from tests.support.status_helpers import status_page

FLAGGED_REFUNDED = 'delivery_daemon_orders_flagged_total{kind="refunded",store="stripe"} 1.0'


def log_lines(multi: Multi, name: str) -> list[dict[str, Any]]:
    """The JSON log lines whose event is ``name``."""
    lines = [json.loads(line) for line in multi.logs.getvalue().splitlines() if line.startswith("{")]
    return [line for line in lines if line["event"] == name]


async def history(multi: Multi, order_id: str) -> list[tuple[str, str, str, int | None]]:
    job = await multi.job("stripe", order_id)
    return [(a.step, a.outcome, a.state, a.http_status) for a in await multi.daemon.queue.history(job.id)]


async def metrics_text(multi: Multi) -> str:
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.get(f"{multi.url}/metrics")
    assert response.status_code == 200
    return response.text


async def while_held(multi: Multi, during: Callable[[], Awaitable[httpx.Response]]) -> httpx.Response:
    """Drain the queue while the seller holds the first delivery request open until ``during()`` (a webhook to the
    daemon) has been answered; returns that answer once the drain is over."""
    arrived, answered = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        arrived.set()
        await answered.wait()

    multi.seller.hold = hold
    drain = asyncio.create_task(multi.drain())
    try:
        await asyncio.wait_for(arrived.wait(), 30)
        response = await during()
    finally:
        answered.set()
        await asyncio.wait_for(drain, 30)
        multi.seller.hold = None
    return response


async def test_refund_during_the_delivery_attempt_leaves_the_order_delivered_and_flagged(tmp_path: Path) -> None:
    """charge.refunded answered while the seller holds the delivery open: the attempt is recorded, the order ends
    delivered, flagged and revoked (the seller gets order.revoked with the delivered keys), with one order.refunded
    warning, one order.revoked event and the flagged-orders and revocations metrics."""
    async with multi_stack(tmp_path) as multi:
        sender = multi.stripe()
        intent = payment_intent("prod-a", quantity=2)
        assert (await sender.send(event("payment_intent.succeeded", intent))).status_code == 200
        refund = await while_held(multi, lambda: sender.send(event("charge.refunded", charge_refunded(intent["id"]))))
        job = await multi.job("stripe", intent["id"])
        assert job.state == "delivered"
        assert job.flag == "refunded" and job.last_error.startswith("refunded")
        assert refund.status_code == 200 and refund.json()["status"] == "pending"
        delivery, revoked = multi.seller.accepted()
        assert delivery.body["data"]["order_id"] == intent["id"] and len(delivery.body["data"]["keys"]) == 2
        assert (revoked.body["type"], revoked.body["data"]["reason"]) == ("order.revoked", "refunded")
        assert revoked.body["data"]["keys"] == delivery.body["data"]["keys"] and revoked.msg_id != delivery.msg_id
        steps = await history(multi, intent["id"])
        assert ("event", "refunded:pending", "running", None) in steps
        assert steps[-5:] == [
            ("deliver", "delivered", "delivered", 200),
            ("event", "refunded:flagged", "delivered", None),
            ("revoke", "refunded:pending", "delivered", None),
            ("revoke", "hook_ok", "delivered", None),
            ("revoke", "done", "delivered", None),
        ]
        flagged = [line for line in log_lines(multi, "order.refunded") if line["flagged"]]
        assert [(line["level"], line["outcome"], line["order_id"]) for line in flagged] == [
            ("warning", "flagged", intent["id"])
        ]
        assert [(line["order_id"], line["reason"]) for line in log_lines(multi, "order.revoked")] == [
            (intent["id"], "refunded")
        ]
        text = await metrics_text(multi)
        assert FLAGGED_REFUNDED in text
        assert 'delivery_daemon_revocations_total{outcome="done",store="stripe"} 1.0' in text


async def test_dispute_during_a_failing_attempt_cancels_the_order_and_keeps_the_attempt(tmp_path: Path) -> None:
    """charge.dispute.created answered while the seller holds a delivery it then answers 500: the failed attempt is
    in the history, the order ends cancelled (not flagged) and is never retried; the attempt may have reached the
    seller, so its keys are revoked (order.revoked) rather than given back."""
    async with multi_stack(tmp_path) as multi:
        sender = multi.stripe()
        intent = payment_intent("prod-a")
        await sender.send(event("payment_intent.succeeded", intent))
        multi.seller.answers = [500]
        answer = await while_held(multi, lambda: sender.send(event("charge.dispute.created", dispute(intent["id"]))))
        assert answer.json()["status"] == "pending"
        job = await multi.job("stripe", intent["id"])
        assert (job.state, job.flag) == ("cancelled", None)
        assert (await history(multi, intent["id"]))[-5:] == [
            ("deliver", "retry", "cancelled", 500),
            ("event", "disputed:cancelled", "cancelled", None),
            ("revoke", "disputed:pending", "cancelled", None),
            ("revoke", "hook_ok", "cancelled", None),
            ("revoke", "done", "cancelled", None),
        ]
        multi.clock.advance(3600)
        assert await multi.drain() == 0
        assert [(r.status, r.body["type"]) for r in multi.seller.received] == [
            (500, "order.delivered"),
            (200, "order.revoked"),
        ]
        assert [line["outcome"] for line in log_lines(multi, "order.disputed")] == ["pending", "cancelled"]
        assert "delivery_daemon_orders_flagged_total{" not in await metrics_text(multi)


def gate(entered: asyncio.Event, release: asyncio.Event) -> type:
    """A generator plugin that signals ``entered`` and answers only once ``release`` is set."""

    class Gate:
        name = "gate"
        Options = NoOptions

        def __init__(self, options: NoOptions) -> None:
            self.options = options

        async def generate(self, order: OrderContext) -> Generated:
            entered.set()
            await release.wait()
            return Generated(keys=[f"GATE-{order.order_id[-6:]}-{i}" for i in range(order.quantity)])

    return Gate


async def test_refund_while_the_keys_are_generated_cancels_before_anything_is_sent(tmp_path: Path) -> None:
    """A refund answered while the worker holds the job in its generate step: the worker sees it before sending,
    the order ends cancelled and the seller receives nothing."""
    entered, release = asyncio.Event(), asyncio.Event()
    async with multi_stack(
        tmp_path, plugins={"gate": gate(entered, release)}, stripe_products={"gated": {"generator": "gate"}}
    ) as multi:
        sender = multi.stripe()
        intent = payment_intent("gated")
        await sender.send(event("payment_intent.succeeded", intent))
        drain = asyncio.create_task(multi.drain())
        try:
            await asyncio.wait_for(entered.wait(), 30)
            refund = await sender.send(event("charge.refunded", charge_refunded(intent["id"])))
        finally:
            release.set()
            await asyncio.wait_for(drain, 30)
        assert refund.json()["status"] == "pending"
        job = await multi.job("stripe", intent["id"])
        assert (job.state, job.flag) == ("cancelled", None)
        assert multi.seller.received == []  # nor an order.revoked: nobody was ever sent this order
        assert (await history(multi, intent["id"]))[-5:] == [
            ("generate", "ok", "cancelled", None),
            ("event", "refunded:cancelled", "cancelled", None),
            ("revoke", "refunded:pending", "cancelled", None),
            ("revoke", "hook_ok", "cancelled", None),
            ("revoke", "done", "cancelled", None),
        ]
        assert (job.content, job.issue) == (None, 1)  # given back: a retry generates a new content
        assert [line["outcome"] for line in log_lines(multi, "order.refunded")] == ["pending", "cancelled"]
        assert "job.lease_lost" not in multi.log_events()


async def test_refund_before_any_attempt_cancels_and_sends_nothing(tmp_path: Path) -> None:
    """A refund for a queued order cancels it at once; the worker then finds nothing to do and sends nothing."""
    async with multi_stack(tmp_path) as multi:
        sender = multi.stripe()
        intent = payment_intent("prod-a")
        await sender.send(event("payment_intent.succeeded", intent))
        refund = await sender.send(event("charge.refunded", charge_refunded(intent["id"])))
        assert refund.json()["status"] == "cancelled"
        assert await multi.drain() == 0
        assert multi.seller.received == []
        job = await multi.job("stripe", intent["id"])
        assert (job.state, job.flag) == ("cancelled", None)
        assert (await history(multi, intent["id"]))[-1] == ("event", "refunded:cancelled", "cancelled", None)


async def test_refund_pending_when_the_lease_expires_cancels_instead_of_requeueing(tmp_path: Path) -> None:
    """A refund waiting on a job whose worker died (lease expired) cancels the job instead of queueing it again."""
    async with multi_stack(tmp_path) as multi:
        sender = multi.stripe()
        intent, other = payment_intent("prod-a"), payment_intent("prod-b")
        await sender.send(event("payment_intent.succeeded", intent))
        await sender.send(event("payment_intent.succeeded", other))
        queue = multi.daemon.queue
        assert len(await queue.claim("dead-worker", 30, 10)) == 2
        assert (await sender.send(event("charge.refunded", charge_refunded(intent["id"])))).json()[
            "status"
        ] == "pending"
        multi.clock.advance(31)
        assert await queue.release_expired() == 2
        job = await multi.job("stripe", intent["id"])
        assert (job.state, job.flag) == ("cancelled", None)
        assert (await history(multi, intent["id"]))[-2:] == [
            ("lease", "expired", "cancelled", None),
            ("event", "refunded:cancelled", "cancelled", None),
        ]
        assert (await multi.job("stripe", other["id"])).state == "queued"
        assert await multi.drain() == 1
        assert [r.body["data"]["order_id"] for r in multi.seller.accepted()] == [other["id"]]


async def test_flagged_order_shows_in_orders_show_on_the_status_page_and_in_metrics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A refund after delivery: `orders show` (table and JSON), the status page's order and orders list and the
    flagged-orders metric all say the delivered order was refunded."""
    async with multi_stack(tmp_path) as multi:
        sender = multi.stripe()
        intent = payment_intent("prod-a")
        await sender.send(event("payment_intent.succeeded", intent))
        await multi.drain()
        assert (await sender.send(event("charge.refunded", charge_refunded(intent["id"])))).json()[
            "status"
        ] == "flagged"
        job = await multi.job("stripe", intent["id"])
        assert (job.state, job.flag) == ("delivered", "refunded")
        database = ["--database", multi.daemon.settings.database.url]
        capsys.readouterr()
        assert main(["orders", "show", intent["id"], *database, "--json"]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert (shown["state"], shown["flag"]) == ("delivered", "refunded")
        assert main(["orders", "show", intent["id"], *database]) == 0
        table = capsys.readouterr().out
        assert any(line.split()[:2] == ["flag", "refunded"] for line in table.splitlines())
        assert main(["orders", "list", *database, "--json"]) == 0
        assert [row["flag"] for row in json.loads(capsys.readouterr().out)] == ["refunded"]
        async with status_page(multi) as page:  # type: ignore[arg-type]  # a Multi: status_page uses only .daemon
            assert (await page.login()).status_code == 303  # to the page it came from
            order = await page.client.get(f"{page.url}/orders/{job.id}")
            assert 'id="order-flag"' in order.text and "refunded after delivery" in order.text
            listed = await page.client.get(f"{page.url}/orders")
            assert 'class="badge flag"' in listed.text and ">refunded<" in listed.text
        assert FLAGGED_REFUNDED in await metrics_text(multi)
