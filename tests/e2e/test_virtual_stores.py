"""Virtual Stores end to end over 127.0.0.1 sockets: the reference shop (staff API + Stripe-signed events), the daemon
with a ``virtual-stores`` store delivering through the signed webhook channel, and the seller's system.

A cart of two digital products and a physical one ends with one delivery holding both products' keys and the shop's
order fulfilled; a forged or mismatched order is never delivered; the shop's faults (401 mid-run, 5xx on fulfil)
retry without a second delivery."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from delivery_daemon.cli import main
from delivery_daemon.clock import ManualClock
from delivery_daemon.compose import Daemon, create_app, default_marketplaces
from delivery_daemon.config import parse_settings
from delivery_daemon.generators.discovery import discover
from delivery_daemon.http.serving import serve
from delivery_daemon.logs import configure_logging
from delivery_daemon.order import Content
from delivery_daemon.reference.standard_webhooks import SellerSystem, new_secret
from delivery_daemon.reference.stripe_store import StripeStoreSender
from delivery_daemon.reference.virtual_stores import STAFF_EMAIL, VirtualStoresShop
from delivery_daemon.storage.stock_pool import StockPool

CART = [
    {"product_id": "ebook", "quantity": 2, "unit_price": "9.90", "name": "E-book"},
    {"product_id": "game", "variant_id": "deluxe", "quantity": 1, "unit_price": "30.00", "name": "Game"},
    {"product_id": "mug", "quantity": 1, "unit_price": "12.50", "name": "Mug"},
]


@dataclass
class Stack:
    daemon: Daemon
    shop: VirtualStoresShop
    seller: SellerSystem
    sender: StripeStoreSender
    clock: ManualClock
    logs: io.StringIO

    async def drain(self) -> int:
        return await self.daemon.worker.drain()

    async def job(self, order_id: str) -> Any:
        return await self.daemon.queue.find("shop", order_id)

    def events(self) -> list[str]:
        return [json.loads(line)["event"] for line in self.logs.getvalue().splitlines() if line.startswith("{")]


PRODUCTS: dict[str, Any] = {
    "ebook": {"generator": "pattern", "options": {"pattern": "EBOOK-XXXX-XXXX"}, "template": "E-book: {keys_lines}"},
    "game:deluxe": {"generator": "pattern", "options": {"pattern": "GAME-XXXX-XXXX"}, "template": "Game: {keys_lines}"},
}


@contextlib.asynccontextmanager
async def stack(tmp_path: Path, products: dict[str, Any] | None = None) -> AsyncIterator[Stack]:
    logs = io.StringIO()
    configure_logging("json", "debug", stream=logs)
    clock = ManualClock()
    shop = VirtualStoresShop(now=clock.now)
    seller = SellerSystem(new_secret(), now=clock.now)
    async with serve(shop.app) as shop_server, serve(seller.app) as seller_server:
        settings = parse_settings(
            {
                "database": {"url": f"sqlite:///{tmp_path / 'vs.db'}"},
                "delivery": {"retry_schedule": [5, 300], "timeout": 10, "jitter": False},
                "worker": {"poll_interval": 60, "lease_seconds": 30},
                "security": {"allowed_networks": ["127.0.0.0/8"]},
                "stores": [
                    {
                        "name": "shop",
                        "marketplace": "virtual-stores",
                        "api_url": shop_server.url,
                        "webhook_secret": shop.webhook_secret,
                        "staff": {"email": STAFF_EMAIL, "password": shop.password},
                        "delivery": {
                            "channel": "webhook",
                            "webhook": {"url": f"{seller_server.url}/hooks/orders", "secret": seller.secret},
                        },
                        "products": {**PRODUCTS, **(products or {})},
                    }
                ],
            },
            environ={},
        )
        app = create_app(
            settings, marketplaces=default_marketplaces(), plugins=dict(discover()), clock=clock, start_worker=False
        )
        async with serve(app) as server:
            yield Stack(
                app.state.daemon, shop, seller, shop.sender(f"{server.url}/webhooks/shop", clock.now), clock, logs
            )


async def test_a_cart_is_delivered_once_with_every_digital_key_and_fulfilled(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        order = s.shop.place_order(CART, email="ann@example.org")
        response = await s.sender.send(s.shop.paid_event(order))
        assert response.status_code == 200 and response.json()["duplicate"] is False
        assert await s.drain() == 1
        job = await s.job(order.payment_intent_id)
        assert job is not None and job.state == "delivered" and job.quantity == 3 and job.product_id == "cart"
        [delivery] = s.seller.accepted()
        keys = delivery.body["data"]["keys"]
        assert len(keys) == 3 and sum(k.startswith("EBOOK-") for k in keys) == 2
        assert sum(k.startswith("GAME-") for k in keys) == 1
        assert delivery.body["data"]["buyer_email"] == "ann@example.org"
        # The shop's order is fulfilled with the documented values and its timeline shows it.
        [fulfilment] = order.fulfilments
        assert fulfilment == {"carrier": "digital", "tracking_number": f"dd-{job.id}"}
        assert order.status == "fulfilled" and order.timeline[-1]["event"] == "order.fulfilled"
        history = await s.daemon.queue.history(job.id)
        assert [(a.step, a.outcome) for a in history][-1] == ("fulfil", "ok")
        assert s.shop.password not in s.logs.getvalue()
        assert not any(token in s.logs.getvalue() for token in s.shop.tokens)
        # Stripe resending the event delivers nothing more, and nothing is fulfilled twice.
        again = await s.sender.send(s.shop.paid_event(order))
        assert again.json()["duplicate"] is True
        assert await s.drain() == 0 and len(s.seller.accepted()) == 1 and len(order.fulfilments) == 1
        assert await s.daemon.worker.follow_ups.sweep() == 0


async def test_a_fulfil_whose_answer_was_lost_is_not_made_twice(tmp_path: Path) -> None:
    """The fulfil step run again after the shop fulfilled the order (its answer lost to a timeout or a kill before the
    outcome was recorded) reads the shop's order and does not call fulfil a second time."""
    async with stack(tmp_path) as s:
        order = s.shop.place_order(CART)
        await s.sender.send(s.shop.paid_event(order))
        await s.drain()
        job = await s.job(order.payment_intent_id)
        assert len(order.fulfilments) == 1
        adapter = s.daemon.stores["shop"].marketplace
        detail = await adapter.after_delivery(job, Content.from_json(job.content))  # type: ignore[attr-defined]  # the virtual store adapter has it
        assert len(order.fulfilments) == 1 and "already: fulfilled" in detail
        assert [path for _, path, _ in s.shop.requests].count(f"/api/orders/{order.id}/fulfill") == 1


async def test_a_cart_waiting_for_stock_is_woken_by_a_refill_of_its_item(tmp_path: Path) -> None:
    """A cart whose stock item ran out waits; importing keys for another product leaves it waiting, importing keys
    for its item's product requeues it, and it is delivered with every key and fulfilled."""
    serials = {"serial": {"generator": "stock", "template": "Serial: {keys_lines}"}}
    async with stack(tmp_path, serials) as s:
        order = s.shop.place_order([*CART[:1], {"product_id": "serial", "quantity": 2, "unit_price": "5.00"}])
        await s.sender.send(s.shop.paid_event(order))
        await s.drain()
        job = await s.job(order.payment_intent_id)
        assert job.state == "waiting" and job.product_id == "cart"
        pool = StockPool(s.daemon.engine, s.clock, s.daemon.queue.cipher)
        pool.import_keys("shop", "ebook", ["NOT-FOR-THIS-ITEM"])
        assert await s.daemon.queue.wake_waiting("shop", "ebook") == []
        pool.import_keys("shop", "serial", ["SER-1", "SER-2"])
        assert await s.daemon.queue.wake_waiting("shop", "serial") == [job.id]
        assert await s.drain() == 1
        [delivery] = s.seller.accepted()
        assert sorted(k for k in delivery.body["data"]["keys"] if k.startswith("SER-")) == ["SER-1", "SER-2"]
        assert (await s.job(order.payment_intent_id)).state == "delivered" and len(order.fulfilments) == 1


async def test_mismatched_and_forged_orders_are_never_delivered(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        cheap = s.shop.place_order(CART)
        wrong_amount = await s.sender.send(s.shop.paid_event(cheap, amount=100))
        assert wrong_amount.status_code == 200
        other = s.shop.place_order(CART[:1])
        euro_for_yen = await s.sender.send(s.shop.paid_event(other, currency="jpy"))
        assert euro_for_yen.status_code == 200
        # A payment naming another customer's paid order (metadata.order_id) is refused by the shop's record.
        victim = s.shop.place_order(CART[:2])
        borrowed = s.shop.place_order(CART[:1])
        borrowed.payment_intent_id = "pi_not_the_victims"
        forged_event = s.shop.paid_event(borrowed, amount=victim.minor(), order_id=victim.id)
        assert (await s.sender.send(forged_event)).status_code == 200
        forged = StripeStoreSender(s.sender.url, "whsec_not_the_secret", now=s.clock.now)
        assert (await forged.send(s.shop.paid_event(s.shop.place_order(CART)))).status_code == 403
        await s.drain()
        assert s.seller.accepted() == []
        for payment, reason in (
            (cheap.payment_intent_id, "amount mismatch"),
            (other.payment_intent_id, "currency mismatch"),
            ("pi_not_the_victims", "was paid with"),
        ):
            job = await s.job(payment)
            assert job is not None and job.state == "held" and reason in (job.last_error or ""), job
        assert all(not o.fulfilments for o in s.shop.orders.values())


async def test_unpaid_orders_are_not_delivered_until_the_shop_records_the_payment(tmp_path: Path) -> None:
    """An order the shop has not recorded as paid yet is retried, then delivered and fulfilled once it is."""
    async with stack(tmp_path) as s:
        pending = s.shop.place_order(CART[:1])
        pending.payment_status = "pending"
        await s.sender.send(s.shop.paid_event(pending))
        await s.drain()
        assert (await s.job(pending.payment_intent_id)).state == "retry_wait"
        pending.payment_status = "paid"  # the shop handled the same Stripe event meanwhile
        s.clock.advance(6)
        assert await s.drain() == 1
        assert len(s.seller.accepted()) == 1 and len(pending.fulfilments) == 1


async def test_a_physical_only_order_ends_cancelled_with_nothing_due(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A paid order of physical goods only ends ``cancelled`` (outcome ``nothing_due``, not ``dead``): no delivery, no
    fulfil call, the reason shown by ``orders show``; it is not retried and the follow-up sweep leaves it alone."""
    async with stack(tmp_path) as s:
        mugs = s.shop.place_order(CART[2:])
        await s.sender.send(s.shop.paid_event(mugs))
        await s.drain()
        job = await s.job(mugs.payment_intent_id)
        assert job.state == "cancelled" and job.content is None and job.attempts == 0
        assert (job.last_error or "").startswith("no digital goods due: shop order")
        assert [(a.step, a.outcome) for a in await s.daemon.queue.history(job.id)][-1] == ("verify", "nothing_due")
        assert "order.nothing_due" in s.events() and "delivery.dead" not in s.events()
        s.clock.advance(3600)
        assert await s.drain() == 0 and await s.daemon.worker.follow_ups.sweep() == 0
        assert s.seller.accepted() == [] and mugs.fulfilments == [] and mugs.status == "processing"
        assert not any(path.endswith("/fulfill") for _, path, _ in s.shop.requests)
        capsys.readouterr()
        assert main(["orders", "show", mugs.payment_intent_id, "--database", f"sqlite:///{tmp_path / 'vs.db'}"]) == 0
        shown = capsys.readouterr().out
        assert "cancelled" in shown and "no digital goods due" in shown and "nothing_due" in shown


async def test_401_mid_run_and_failing_fulfil_retry_without_a_second_delivery(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        first = s.shop.place_order(CART[:1])
        await s.sender.send(s.shop.paid_event(first))
        await s.drain()
        assert s.shop.logins == 1
        s.shop.faults.expire_tokens = True  # the shop forgets every token: a 401, the refresh refused, a new login
        s.shop.faults.fulfil_failures = [503, 500]
        second = s.shop.place_order(CART[:2])
        await s.sender.send(s.shop.paid_event(second))
        await s.drain()
        assert s.shop.logins == 2 and len(s.seller.accepted()) == 2
        job = await s.job(second.payment_intent_id)
        assert job.state == "delivered" and second.fulfilments == []
        assert "after_delivery.retry_scheduled" in s.events()
        assert await s.daemon.worker.follow_ups.sweep() == 0  # not due yet (5 s)
        s.clock.advance(6)
        assert await s.daemon.worker.follow_ups.sweep() == 1 and second.fulfilments == []  # 500: again
        s.clock.advance(301)
        assert await s.daemon.worker.follow_ups.sweep() == 1
        assert len(second.fulfilments) == 1 and len(s.seller.accepted()) == 2
        outcomes = [(a.step, a.outcome) for a in await s.daemon.queue.history(job.id) if a.step == "fulfil"]
        assert outcomes == [("fulfil", "retry"), ("fulfil", "retry"), ("fulfil", "ok")]
        # An expired token (time, not a revocation) is refreshed before use, not logged in again.
        s.clock.advance(s.shop.token_ttl)
        third = s.shop.place_order(CART[:1])
        await s.sender.send(s.shop.paid_event(third))
        await s.drain()
        assert s.shop.refreshes >= 1 and s.shop.logins == 2 and len(third.fulfilments) == 1


async def test_a_refund_shows_in_the_shops_order(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        order = s.shop.place_order(CART[:1])
        await s.sender.send(s.shop.paid_event(order))
        await s.drain()
        response = await s.sender.send(s.shop.refund_event(order))
        assert response.json()["status"] == "flagged"
        adapter = s.daemon.stores["shop"].marketplace
        await adapter.notes_sent()  # type: ignore[attr-defined]  # the virtual store adapter has it
        assert order.status == "refunded" and order.timeline[-1]["event"] == "status.refunded"
        assert "flagged" in order.timeline[-1]["note"]
