"""Stripe Checkout / Payment Links end to end over 127.0.0.1 sockets: the reference Stripe account (its API and its
signed events with Stripe's retries), the daemon with a ``stripe-checkout`` store delivering through the signed webhook
channel, and the seller's system.

One job per Checkout Session whatever events arrive for it; a delayed payment waits for
``checkout.session.async_payment_succeeded``; a multi-line session is one delivery of every configured line's keys;
refunds are mapped from the PaymentIntent to the session through Stripe's API; an unanswered or refused event is
retried by the reference account as Stripe does."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from delivery_daemon.clock import ManualClock
from delivery_daemon.compose import Daemon, create_app, default_marketplaces
from delivery_daemon.config import parse_settings
from delivery_daemon.generators.discovery import discover
from delivery_daemon.http.serving import serve
from delivery_daemon.logs import configure_logging
from delivery_daemon.reference.standard_webhooks import SellerSystem, new_secret
from delivery_daemon.reference.stripe_checkout import StripeCheckoutAccount
from delivery_daemon.reference.stripe_store import StripeStoreSender

EBOOK = "prod_ebook"  # configured by Product id: every Price of it delivers the e-book
GAME_PRICE = "price_game_deluxe"  # configured by Price id: only this Price of its Product delivers the game


@dataclass
class Stack:
    daemon: Daemon
    account: StripeCheckoutAccount
    seller: SellerSystem
    clock: ManualClock
    logs: io.StringIO
    hook: str

    async def drain(self) -> int:
        return await self.daemon.worker.drain()

    async def job(self, session_id: str) -> Any:
        return await self.daemon.queue.find("shop", session_id)

    def events(self) -> list[str]:
        return [json.loads(line)["event"] for line in self.logs.getvalue().splitlines() if line.startswith("{")]


@contextlib.asynccontextmanager
async def stack(tmp_path: Path, db_url: str | None = None) -> AsyncIterator[Stack]:
    logs = io.StringIO()
    configure_logging("json", "debug", stream=logs)
    clock = ManualClock()
    account = StripeCheckoutAccount(now=clock.now)
    account.prices["price_game_deluxe"] = "prod_game"
    seller = SellerSystem(new_secret(), now=clock.now)
    async with serve(account.app) as stripe_server, serve(seller.app) as seller_server:
        settings = parse_settings(
            {
                "database": {"url": db_url or f"sqlite:///{tmp_path / 'checkout.db'}"},
                "delivery": {"retry_schedule": [5, 300], "timeout": 10, "jitter": False},
                "worker": {"poll_interval": 60, "lease_seconds": 30},
                "security": {"allowed_networks": ["127.0.0.0/8"]},
                "stores": [
                    account.store(
                        "shop",
                        stripe_server.url,
                        f"{seller_server.url}/hooks/orders",
                        seller.secret,
                        {
                            EBOOK: {"generator": "pattern", "options": {"pattern": "EBOOK-XXXX-XXXX"}},
                            GAME_PRICE: {"generator": "pattern", "options": {"pattern": "GAME-XXXX-XXXX"}},
                        },
                    )
                ],
            },
            environ={},
        )
        app = create_app(
            settings, marketplaces=default_marketplaces(), plugins=dict(discover()), clock=clock, start_worker=False
        )
        async with serve(app) as server:
            account.endpoint = f"{server.url}/webhooks/shop"
            yield Stack(app.state.daemon, account, seller, clock, logs, account.endpoint)
            await app.state.daemon.aclose()


async def test_a_paid_session_is_verified_and_delivered_once_on_both_databases(tmp_path: Path, db_url: str) -> None:
    """checkout.session.completed (paid) → the session and its line items are read from Stripe → one delivery."""
    async with stack(tmp_path, db_url) as s:
        session, _ = s.account.checkout([(s.account.price(EBOOK), 2)], email="ann@example.org")
        assert await s.account.deliver_due() == [200]
        assert await s.drain() == 1
        job = await s.job(session.id)
        assert job.state == "delivered" and job.quantity == 2 and job.product_id == "cart"
        [delivery] = s.seller.accepted()
        data = delivery.body["data"]
        assert data["order_id"] == session.id and data["buyer_email"] == "ann@example.org"
        assert len(data["keys"]) == 2 and all(k.startswith("EBOOK-") for k in data["keys"])
        read = [path for _, path, status in s.account.requests if status == 200]
        assert read == [f"/v1/checkout/sessions/{session.id}", f"/v1/checkout/sessions/{session.id}/line_items"]


async def test_forged_and_stale_signatures_are_refused_and_store_nothing(tmp_path: Path) -> None:
    """A wrong secret or an unsigned body answers 403, an old timestamp 403: no job, no API call, no secret logged."""
    async with stack(tmp_path) as s:
        session, completed = s.account.checkout([(s.account.price(EBOOK), 1)])
        forged = StripeStoreSender(s.hook, "whsec_not_the_secret", now=s.clock.now)
        assert (await forged.send(completed)).status_code == 403
        stale = await s.account.sender().send(completed, timestamp=int(s.clock.now()) - 600)
        assert stale.status_code == 403 and "tolerance" in stale.json()["error"]
        unsigned = await forged.post(json.dumps(completed).encode(), {})
        assert unsigned.status_code == 403 and "error" in unsigned.json()
        assert await s.job(session.id) is None and s.account.requests == []
        assert s.account.webhook_secret not in s.logs.getvalue() and s.account.api_key not in s.logs.getvalue()


async def test_the_same_session_twice_and_both_paid_events_make_one_job(tmp_path: Path) -> None:
    """A resent event is a duplicate event; async_payment_succeeded after a paid completed is a duplicate order."""
    async with stack(tmp_path) as s:
        session, completed = s.account.checkout([(s.account.price(EBOOK), 1)])
        await s.account.deliver_due()
        again = await s.account.sender().send(completed)
        assert again.json() == {"status": "duplicate", "duplicate": True}
        s.account.settle(session)  # a second paid event for the same session (Stripe guarantees no order)
        assert await s.account.deliver_due() == [200]
        assert s.seller.accepted() == [] and await s.drain() == 1
        assert len(s.seller.accepted()) == 1
        assert (await s.job(session.id)).received == 2


async def test_a_delayed_payment_is_delivered_only_when_it_succeeds(tmp_path: Path) -> None:
    """completed with payment_status unpaid stores nothing; async_payment_succeeded later makes the order."""
    async with stack(tmp_path) as s:
        session, _ = s.account.checkout([(s.account.price(EBOOK), 1)], payment="unpaid")
        await s.account.deliver_due()
        assert s.account.outbox[0].answers == [200]  # acknowledged: Stripe must not resend it
        assert await s.job(session.id) is None and await s.drain() == 0
        s.clock.advance(2 * 86_400)  # a bank debit takes days
        s.account.settle(session)
        assert await s.account.deliver_due() == [200]
        assert await s.drain() == 1
        assert (await s.job(session.id)).state == "delivered" and len(s.seller.accepted()) == 1


async def test_a_failed_delayed_payment_delivers_nothing(tmp_path: Path) -> None:
    """async_payment_failed after an unpaid completed is acknowledged and ignored: no job, nothing delivered."""
    async with stack(tmp_path) as s:
        session, _ = s.account.checkout([(s.account.price(EBOOK), 1)], payment="unpaid")
        s.account.settle(session, succeeded=False)
        assert await s.account.deliver_due() == [200, 200]
        assert await s.job(session.id) is None and await s.drain() == 0 and s.seller.received == []


async def test_a_session_of_several_lines_is_one_delivery_of_every_configured_line(tmp_path: Path) -> None:
    """Two configured lines (by Product and by Price id) and one not configured: one delivery with both products'
    keys; the line items are read through their pages when the session has more than one page of them."""
    async with stack(tmp_path) as s:
        mug = s.account.price("prod_mug")  # physical: not configured, left alone
        lines = [(s.account.price(EBOOK), 2), (mug, 1), (GAME_PRICE, 1)]
        lines += [(mug, 1)] * 120  # more than one page of line items (Stripe: at most 100 a page)
        session, _ = s.account.checkout(lines)
        await s.account.deliver_due()
        assert await s.drain() == 1
        [delivery] = s.seller.accepted()
        keys = delivery.body["data"]["keys"]
        assert delivery.body["data"]["order_id"] == session.id
        assert len(keys) == 3 and sum(k.startswith("EBOOK-") for k in keys) == 2
        assert sum(k.startswith("GAME-") for k in keys) == 1
        pages = [path for _, path, _ in s.account.requests if path.endswith("/line_items")]
        assert len(pages) == 2


async def test_a_session_with_no_configured_product_is_dead_not_delivered(tmp_path: Path) -> None:
    """A session whose lines are all unconfigured products ends dead with the reason, and nothing is sent."""
    async with stack(tmp_path) as s:
        session, _ = s.account.checkout([(s.account.price("prod_mug"), 1)])
        await s.account.deliver_due()
        await s.drain()
        job = await s.job(session.id)
        assert job.state == "dead" and "no line item" in job.last_error and s.seller.received == []


async def test_a_refund_before_delivery_cancels_and_after_delivery_flags(tmp_path: Path) -> None:
    """charge.refunded names a PaymentIntent: its session is found through Stripe and its job cancelled (not yet
    delivered) or flagged (delivered)."""
    async with stack(tmp_path) as s:
        early, _ = s.account.checkout([(s.account.price(EBOOK), 1)])
        late, _ = s.account.checkout([(s.account.price(EBOOK), 1)])
        await s.account.deliver_due()
        s.account.refund(early)
        assert await s.account.deliver_due() == [200]
        assert (await s.job(early.id)).state == "cancelled"
        assert await s.drain() == 1  # only the late one
        s.account.refund(late, refund_created=True)  # both refund events, as a seller subscribed to both gets
        assert await s.account.deliver_due() == [200, 200]
        job = await s.job(late.id)
        assert job.state == "delivered" and job.last_error.startswith("refunded")
        assert late.payment_intent in job.last_error
        assert "order.refunded" in s.events()
        assert [d.body["data"]["order_id"] for d in s.seller.accepted()] == [late.id]


async def test_a_dispute_flags_the_delivered_session(tmp_path: Path) -> None:
    """charge.dispute.created after delivery flags the session's job with the dispute's reason and revokes its keys."""
    async with stack(tmp_path) as s:
        session, _ = s.account.checkout([(s.account.price(EBOOK), 1)])
        await s.account.deliver_due()
        await s.drain()
        s.account.dispute(session)
        await s.account.deliver_due()
        history = await s.daemon.queue.history((await s.job(session.id)).id)
        # flagged, then (revocation, #24) the delivered keys' revocation recorded with the same reason
        assert [h.outcome for h in history][-2:] == ["disputed:flagged", "disputed:pending"]


async def test_a_refund_of_a_payment_no_session_made_is_ignored(tmp_path: Path) -> None:
    """A refund of a PaymentIntent that no Checkout Session created (another integration) changes nothing."""
    async with stack(tmp_path) as s:
        s.account.emit("charge.refunded", {"id": "ch_1", "object": "charge", "payment_intent": "pi_elsewhere"})
        [answer] = await s.account.deliver_due()
        assert answer == 200 and "webhook.ignored" in s.events()


async def test_events_are_retried_as_stripe_does_until_the_daemon_takes_them(tmp_path: Path) -> None:
    """A refund arriving while Stripe's API fails is answered 503 and retried a minute later; an event the
    daemon cannot be reached for is retried after 1, then 2 minutes and delivered once."""
    async with stack(tmp_path) as s:
        session, _ = s.account.checkout([(s.account.price(EBOOK), 1)])
        await s.account.deliver_due()
        s.account.api_failures = [503]
        s.account.refund(session)
        assert await s.account.deliver_due() == [503]
        assert "webhook.resolve_failed" in s.events() and (await s.job(session.id)).state == "queued"
        s.clock.advance(59)
        assert await s.account.deliver_due() == []  # not due yet
        s.clock.advance(1)
        assert await s.account.deliver_due() == [200]
        assert (await s.job(session.id)).state == "cancelled"

        endpoint, s.account.endpoint = s.account.endpoint, "http://127.0.0.1:9/webhooks/shop"  # the daemon is away
        other, _ = s.account.checkout([(s.account.price(EBOOK), 1)])
        assert await s.account.deliver_due() == [None]
        s.clock.advance(60)
        assert await s.account.deliver_due() == [None]
        s.account.endpoint = endpoint
        s.clock.advance(60)
        assert await s.account.deliver_due() == []  # the second retry is two minutes after the first
        s.clock.advance(60)
        assert await s.account.deliver_due() == [200]
        assert s.account.pending() == [] and await s.drain() == 1
        assert [d.body["data"]["order_id"] for d in s.seller.accepted()] == [other.id]


async def test_a_session_stripe_no_longer_reports_paid_is_not_delivered(tmp_path: Path) -> None:
    """Trust but verify: a signed paid event for a session Stripe reports unpaid is retried, not delivered."""
    async with stack(tmp_path) as s:
        session, completed = s.account.checkout([(s.account.price(EBOOK), 1)], payment="unpaid")
        forged = json.loads(json.dumps(completed))
        forged["id"] = "evt_replayed_paid"
        forged["data"]["object"]["payment_status"] = "paid"
        assert (await s.account.sender().send(forged)).json()["status"] == "accepted"
        await s.drain()
        job = await s.job(session.id)
        assert job.state == "retry_wait" and "not paid yet" in job.last_error and s.seller.received == []
