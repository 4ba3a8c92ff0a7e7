"""Paddle Billing and Paddle Classic end to end over loopback sockets, against the reference Paddle: signed events,
the transaction read through the API (quantity, buyer email), duplicates, refunds and chargebacks, Paddle's retries,
the answer before generation, the transaction list, and Classic's synchronous keys."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import httpx

from delivery_daemon.generators.contract import Generated, OrderContext
from delivery_daemon.marketplaces.listing import OrderListing
from delivery_daemon.marketplaces.paddle import PaddleAdapter
from delivery_daemon.reference.paddle import adjustment, event, line
from tests.support.multistore import Hang
from tests.support.paddle import paddle_stack


async def test_completed_transaction_is_verified_and_delivered_with_the_api_email(tmp_path: Path) -> None:
    """transaction.completed for 3 keys is answered 200, read back with include=customer and delivered once, to the
    buyer email only the API knows."""
    async with paddle_stack(tmp_path) as stack:
        txn = stack.billing.place("pro_keys", quantity=3, email="ann@example.org")
        response = await stack.sender().send(stack.billing.completed(txn))
        assert response.status_code == 200 and response.json()["duplicate"] is False
        assert await stack.drain() == 1
        job = await stack.job(txn.id)
        assert job.state == "delivered" and job.quantity == 3 and job.buyer_email == "ann@example.org"
        [delivery] = stack.seller.accepted()
        data = delivery.body["data"]
        assert data["order_id"] == txn.id and data["product_id"] == "pro_keys" and len(data["keys"]) == 3
        assert any(f"/transactions/{txn.id}" in r and "include=customer" in r for r in stack.billing.requests)


async def test_forged_stale_and_unsigned_events_are_refused_and_store_nothing(tmp_path: Path) -> None:
    """A wrong secret, a signature 10 minutes old and no signature each answer 403 with a reason; no job exists."""
    async with paddle_stack(tmp_path) as stack:
        txn = stack.billing.place("pro_keys")
        message = stack.billing.completed(txn)
        forged = await stack.sender("pdl_ntfset_not_the_secret").send(message)
        stale = await stack.sender().send(message, timestamp=int(stack.clock.now()) - 600)
        async with httpx.AsyncClient() as client:
            unsigned = await client.post(
                f"{stack.url}/webhooks/paddle",
                content=json.dumps(message),
                headers={"Content-Type": "application/json"},
            )
        for answer in (forged, stale, unsigned):
            assert answer.status_code == 403 and answer.json()["error"]
        assert "tolerance" in stale.json()["error"]
        assert await stack.job(txn.id) is None
        assert stack.secret not in stack.logs.getvalue() and stack.billing.api_key not in stack.logs.getvalue()


async def test_rotated_secret_is_accepted_while_both_sign(tmp_path: Path) -> None:
    """During a rotation Paddle signs with the new and the old secret: the daemon, still on the old one, accepts."""
    async with paddle_stack(tmp_path) as stack:
        txn = stack.billing.place("pro_keys")
        sender = stack.sender("pdl_ntfset_the_new_secret", old_secrets=(stack.secret,))
        response = await sender.send(stack.billing.completed(txn))
        assert response.status_code == 200 and sender.sent[-1].headers["Paddle-Signature"].count("h1=") == 2


async def test_resent_event_and_a_second_event_for_the_transaction_make_one_job(tmp_path: Path) -> None:
    """The same event_id resent is a duplicate event; a new event for the same transaction is a duplicate order."""
    async with paddle_stack(tmp_path) as stack:
        sender = stack.sender()
        txn = stack.billing.place("pro_keys", quantity=2)
        message = stack.billing.completed(txn)
        assert (await sender.send(message)).json()["duplicate"] is False
        assert (await sender.send(message)).json() == {"status": "duplicate", "duplicate": True}
        assert (await sender.send(stack.billing.completed(txn))).json()["duplicate"] is True
        await stack.drain()
        assert len(stack.seller.accepted()) == 1 and (await stack.job(txn.id)).received == 2


async def test_refund_before_delivery_cancels_and_after_delivery_flags(tmp_path: Path) -> None:
    """An approved refund cancels an undelivered order (nothing sent) and flags a delivered one; a refund pending
    approval changes nothing until adjustment.updated approves it; a chargeback marks the order disputed."""
    async with paddle_stack(tmp_path) as stack:
        sender = stack.sender()
        late = stack.billing.place("pro_keys")
        await sender.send(stack.billing.completed(late))
        await stack.drain()
        flagged = await sender.send(event("adjustment.created", adjustment(late.id)))
        assert flagged.json()["status"] == "flagged"
        assert (await stack.job(late.id)).last_error.startswith("refunded")
        assert "order.refunded" in stack.log_events()

        early = stack.billing.place("pro_keys")
        await sender.send(stack.billing.completed(early))
        pending = adjustment(early.id, status="pending_approval")
        assert (await sender.send(event("adjustment.created", pending))).json() == {"status": "ignored"}
        approved = await sender.send(event("adjustment.updated", {**pending, "status": "approved"}))
        assert approved.json()["status"] == "cancelled"
        await stack.drain()
        # The late order's keys went out once and were then revoked (order.revoked); the early one's never went out.
        sent = [(r.body["type"], r.body["data"]["order_id"]) for r in stack.seller.accepted()]
        assert (await stack.job(early.id)).state == "cancelled"
        assert sent == [("order.delivered", late.id), ("order.revoked", late.id)]

        disputed = stack.billing.place("pro_keys")
        await sender.send(stack.billing.completed(disputed))
        chargeback = await sender.send(event("adjustment.created", adjustment(disputed.id, "chargeback")))
        assert chargeback.json()["status"] == "cancelled"
        history = await stack.daemon.queue.history((await stack.job(disputed.id)).id)
        assert history[-1].outcome == "disputed:cancelled"


async def test_refund_before_the_order_means_no_delivery(tmp_path: Path) -> None:
    """A refund for a transaction not seen yet is remembered: its transaction.completed delivers nothing."""
    async with paddle_stack(tmp_path) as stack:
        sender = stack.sender()
        txn = stack.billing.place("pro_keys")
        assert (await sender.send(event("adjustment.created", adjustment(txn.id)))).json()["status"] == (
            "cancelled_unseen"
        )
        assert (await sender.send(stack.billing.completed(txn))).json()["duplicate"] is True
        await stack.drain()
        assert stack.seller.accepted() == []


async def test_paddle_retries_a_refused_notification_until_it_is_stored_once(tmp_path: Path) -> None:
    """A notification answered 429 (the store's rate limit) is resent by Paddle and stored on the try that gets 2xx,
    once; the answer comes back on each try without waiting for anything but the commit."""
    limits = {"store_rate_limits": {"paddle": {"per_second": 0.1, "burst": 1}}}
    async with paddle_stack(tmp_path, server=limits) as stack:
        sender = stack.sender()
        first = stack.billing.place("pro_keys")
        assert (await sender.send(stack.billing.completed(first))).status_code == 200
        second = stack.billing.place("pro_keys")

        async def later(attempt: int) -> None:
            stack.clock.advance(6.0)

        answers = await sender.deliver(stack.billing.completed(second), between=later)
        assert [a.status_code for a in answers] == [429, 429, 200]
        assert len({json.loads(s.body)["event_id"] for s in sender.sent[1:]}) == 1
        await stack.drain()
        assert (await stack.job(second.id)).state == "delivered" and len(stack.seller.accepted()) == 2


async def test_paddle_api_failure_is_retried_with_backoff(tmp_path: Path) -> None:
    """Verification meeting a 500 from Paddle's API waits per the retry schedule, then delivers."""
    async with paddle_stack(tmp_path) as stack:
        txn = stack.billing.place("pro_keys")
        await stack.sender().send(stack.billing.completed(txn))
        stack.billing.failures.append(500)
        await stack.drain()
        assert (await stack.job(txn.id)).state == "retry_wait" and stack.seller.accepted() == []
        stack.clock.advance(5.0)
        await stack.drain()
        assert (await stack.job(txn.id)).state == "delivered"


class Started(Hang):
    """A generator that never finishes and says when it has started."""

    started = asyncio.Event()

    async def generate(self, order: OrderContext) -> Generated:
        Started.started.set()
        return await super().generate(order)


async def test_the_answer_does_not_wait_for_a_generator(tmp_path: Path) -> None:
    """With a generator hung mid-order (Paddle waits 5 s), a new notification is still answered 200 within 5 s."""
    Started.started = asyncio.Event()
    async with paddle_stack(tmp_path, plugins={"hang": Started}) as stack:
        sender = stack.sender()
        slow = stack.billing.place("pro_slow")
        await sender.send(stack.billing.completed(slow))
        drain = asyncio.create_task(stack.drain())
        try:
            await asyncio.wait_for(Started.started.wait(), 10)
            other = stack.billing.place("pro_slow")
            answer = await sender.send(stack.billing.completed(other), wait=5.0)
            assert answer.status_code == 200 and (await stack.job(other.id)).state == "queued"
            assert (await stack.job(slow.id)).state == "running"
        finally:
            drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drain


async def test_transaction_list_pages_completed_orders_for_the_watchdog(tmp_path: Path) -> None:
    """list_paid_orders pages through completed transactions oldest first with the after cursor; each is
    deliverable and normalised as its webhook would be."""
    async with paddle_stack(tmp_path) as stack:
        placed = []
        for n in range(3):
            stack.clock.advance(60)
            placed.append(stack.billing.place("pro_keys", quantity=n + 1))
        stack.billing.place("pro_keys", status="past_due")
        adapter = stack.daemon.stores["paddle"].marketplace
        assert isinstance(adapter, PaddleAdapter) and isinstance(adapter, OrderListing)
        adapter.api.page_size = 2
        first = await adapter.list_paid_orders(stack.clock.now() - 3600)
        assert [o.order.order_id for o in first.orders] == [placed[0].id, placed[1].id] and first.cursor == placed[1].id
        second = await adapter.list_paid_orders(stack.clock.now() - 3600, first.cursor)
        assert [o.order.order_id for o in second.orders] == [placed[2].id] and second.cursor is None
        listed = second.orders[0]
        assert (
            listed.deliverable and listed.order.payload["quantity"] == 3 and listed.created_at == placed[2].created_at
        )
        later = await adapter.list_paid_orders(placed[2].created_at)
        assert [o.order.order_id for o in later.orders] == [placed[2].id]


async def test_multi_line_transaction_delivers_the_configured_line(tmp_path: Path) -> None:
    """A transaction with an unconfigured line first delivers the configured line's quantity."""
    async with paddle_stack(tmp_path) as stack:
        txn = stack.billing.place("pro_keys", quantity=2, extra_items=[line("pro_unknown", 5)])
        await stack.sender().send(stack.billing.completed(txn))
        await stack.drain()
        job = await stack.job(txn.id)
        assert job.product_id == "pro_keys" and job.quantity == 2 and job.state == "delivered"


async def test_classic_fulfilment_answers_keys_and_the_same_keys_again(tmp_path: Path) -> None:
    """The signed fulfilment request for 3 answers 3 keys as text/plain, stored; the same request again answers
    the same keys; nothing goes through the channel."""
    async with paddle_stack(tmp_path) as stack:
        fields = stack.vendor.fields("7", quantity=3, email="ann@example.org")
        first = await stack.vendor.fulfil(fields)
        assert first.status_code == 200 and first.headers["content-type"].startswith("text/plain")
        keys = first.text.split("\n")
        assert len(keys) == 3 and len(set(keys)) == 3
        job = await stack.job(fields["p_order_id"], "paddle-classic")
        assert job.state == "delivered" and job.quantity == 3 and job.buyer_email == "ann@example.org"
        again = await stack.vendor.fulfil(fields)
        assert again.status_code == 200 and again.text == first.text
        assert await stack.drain() == 0 and stack.seller.received == []
        assert keys[0] not in stack.logs.getvalue()


async def test_classic_forged_json_and_hung_requests(tmp_path: Path) -> None:
    """A changed field is 403, JSON is 415, a generator past the budget is 503 with the job dead; none stores keys."""
    async with paddle_stack(tmp_path, classic_budget=0.5) as stack:
        fields = stack.vendor.fields("7", quantity=1)
        forged = await stack.vendor.fulfil({**fields, "p_quantity": "50"})
        assert forged.status_code == 403 and await stack.job(fields["p_order_id"], "paddle-classic") is None
        async with httpx.AsyncClient() as client:
            as_json = await client.post(stack.vendor.url, json=fields)
        assert as_json.status_code == 415 and "x-www-form-urlencoded" in as_json.json()["error"]
        hung = stack.vendor.fields("hang", quantity=1)
        answer = await stack.vendor.fulfil(hung)
        assert answer.status_code == 503
        job = await stack.job(hung["p_order_id"], "paddle-classic")
        assert job.state == "dead" and job.content is None and "fulfil.failed" in stack.log_events()


async def test_classic_refund_and_dispute_alerts_mark_the_fulfilled_order(tmp_path: Path) -> None:
    """A signed payment_refunded alert flags a fulfilled Classic order and records its revocation, once per alert_id;
    a refund of an order not fulfilled yet makes its fulfilment request 409; a dispute alert flags; a forged alert is
    403 and a VAT-only refund is ignored, neither marking anything."""
    async with paddle_stack(tmp_path) as stack:
        vendor = stack.vendor
        sold = vendor.fields("7", quantity=1)
        assert (await vendor.fulfil(sold)).status_code == 200
        order_id = sold["p_order_id"]
        forged = vendor.alert("payment_refunded", order_id)
        assert (await vendor.post_form({**forged, "order_id": "1"})).status_code == 403
        vat = await vendor.post_form(vendor.alert("payment_refunded", order_id, refund_type="vat"))
        assert vat.json() == {"status": "ignored"}
        assert (await stack.job(order_id, "paddle-classic")).last_error is None

        refund = vendor.alert("payment_refunded", order_id, alert_id="70001")
        flagged = await vendor.post_form(refund)
        assert flagged.json() == {"status": "flagged", "order_id": order_id}
        again = await vendor.post_form(refund)
        assert again.json()["status"] == "duplicate" and "webhook.duplicate_event" in stack.log_events()
        job = await stack.job(order_id, "paddle-classic")
        assert job.state == "delivered" and job.last_error.startswith("refunded: Paddle Classic payment_refunded")
        assert len(await stack.daemon.queue.revocations(job.id)) == 1

        early = vendor.fields("7", quantity=1)
        unseen = await vendor.post_form(vendor.alert("payment_refunded", early["p_order_id"]))
        assert unseen.json()["status"] == "cancelled_unseen"
        refused = await vendor.fulfil(early)
        assert refused.status_code == 409 and early["p_order_id"] not in vendor.products

        disputed = vendor.fields("7", quantity=1)
        await vendor.fulfil(disputed)
        dispute = await vendor.post_form(vendor.alert("payment_dispute_created", disputed["p_order_id"]))
        assert dispute.json()["status"] == "flagged"
        history = await stack.daemon.queue.history((await stack.job(disputed["p_order_id"], "paddle-classic")).id)
        assert history[-1].outcome.startswith("disputed")
        assert "order.refunded" in stack.log_events() and "order.disputed" in stack.log_events()


async def test_verification_refuses_what_paddle_does_not_confirm(tmp_path: Path) -> None:
    """A signed event for a transaction Paddle does not know, or one Paddle says is past due, is dead, nothing sent;
    an API key Paddle refuses is retried (the seller may fix it), with Paddle's reason in the job."""
    async with paddle_stack(tmp_path) as stack:
        sender = stack.sender()
        ghost = stack.billing.place("pro_keys")
        message = stack.billing.completed(ghost)
        del stack.billing.transactions[ghost.id]
        unpaid = stack.billing.place("pro_keys", status="past_due")
        refused = stack.billing.place("pro_keys")
        for txn_message in (message, stack.billing.completed(unpaid)):
            assert (await sender.send(txn_message)).status_code == 200
        await stack.drain()
        assert (await stack.job(ghost.id)).state == "dead" and "not found" in (await stack.job(ghost.id)).last_error
        assert (await stack.job(unpaid.id)).state == "dead" and "past_due" in (await stack.job(unpaid.id)).last_error
        key, stack.billing.api_key = stack.billing.api_key, "pdl_rotated_elsewhere"
        await sender.send(stack.billing.completed(refused))
        await stack.drain()
        job = await stack.job(refused.id)
        assert job.state == "retry_wait" and "403" in job.last_error
        stack.billing.api_key = key
        stack.clock.advance(5.0)
        await stack.drain()
        assert (await stack.job(refused.id)).state == "delivered" and len(stack.seller.accepted()) == 1
