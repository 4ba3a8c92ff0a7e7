"""Gumroad end to end over loopback sockets: Pings authenticated by the URL token and seller_id, re-read through the
reference sales API, deduplicated on sale_id, refunds and disputes from resource subscriptions, Gumroad's hourly
resends, and the sales list for the missed-order watchdog."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from delivery_daemon.errors import MarketplaceError
from delivery_daemon.http.serving import serve
from delivery_daemon.marketplaces.gumroad import GumroadApiAdapter
from delivery_daemon.marketplaces.listing import OrderListing
from delivery_daemon.reference.gumroad import FORM, RETRY_DELAYS, GumroadApi, GumroadPinger, ping_form
from tests.support.multistore import PATTERN, Multi, multi_stack

TOKEN = "ping-token-" + "7" * 24


@contextlib.asynccontextmanager
async def gumroad_stack(
    tmp_path: Path, *, api: bool = True, server: dict[str, Any] | None = None
) -> AsyncIterator[tuple[Multi, GumroadApi]]:
    """The daemon with a ``gumroad`` store (with an access token to the reference API when ``api``)."""
    market = GumroadApi(page_size=2)
    async with serve(market.app) as api_server:
        store: dict[str, Any] = {
            "name": "gumroad",
            "marketplace": "gumroad",
            "webhook_secret": TOKEN,
            "seller_id": market.seller_id,
            "default": PATTERN,
        }
        if api:
            store |= {"api_url": api_server.url, "api_key": market.access_token}
        async with multi_stack(tmp_path, stores=[store], server_settings=server) as multi:
            market.now = multi.clock.now
            yield multi, market


def pinger(multi: Multi, token: str = TOKEN) -> GumroadPinger:
    return GumroadPinger(multi.hook("gumroad"), token, now=multi.clock.now)


async def test_ping_is_reread_and_delivered_once(tmp_path: Path) -> None:
    """A Ping is queued, re-read through GET /v2/sales/{id} and delivered once; the same sale_id is a duplicate."""
    async with gumroad_stack(tmp_path) as (multi, market):
        sale = market.sell("pencil", 2, "carol@example.org")
        sender = pinger(multi)
        first = await sender.ping(ping_form(sale))
        assert first.status_code == 200 and first.json()["duplicate"] is False
        assert (await sender.ping(ping_form(sale))).json()["duplicate"] is True
        await multi.drain()
        [delivery] = multi.seller.accepted()
        assert delivery.body["data"]["buyer_email"] == "carol@example.org" and len(delivery.body["data"]["keys"]) == 2
        assert market.lookups == 1
        assert TOKEN not in multi.logs.getvalue() and market.access_token not in multi.logs.getvalue()


async def test_without_access_token_the_ping_is_used(tmp_path: Path) -> None:
    """Without an access token the Ping's own fields are delivered, and the API is never asked."""
    async with gumroad_stack(tmp_path, api=False) as (multi, market):
        sale = market.sell("pencil", 1)
        assert (await pinger(multi).ping(ping_form(sale))).status_code == 200
        await multi.drain()
        assert len(multi.seller.accepted()) == 1 and market.lookups == 0


async def test_wrong_token_or_seller_is_refused(tmp_path: Path) -> None:
    """A wrong or missing token, or another seller_id, is a 403 with a JSON reason, and nothing is stored."""
    async with gumroad_stack(tmp_path) as (multi, market):
        sale = market.sell("pencil")
        wrong = await pinger(multi, "not-the-token-at-all-0000").ping(ping_form(sale))
        assert wrong.status_code == 403 and wrong.json() == {"error": "invalid token"}
        async with httpx.AsyncClient() as client:
            bare = await client.post(
                multi.hook("gumroad"), content=urlencode(ping_form(sale)), headers={"Content-Type": FORM}
            )
        assert bare.status_code == 403 and bare.json() == {"error": "missing token"}
        other = ping_form(sale) | {"seller_id": "someone-else=="}
        refused = await pinger(multi).ping(other)
        assert refused.status_code == 403 and "seller_id" in refused.json()["error"]
        assert await multi.job("gumroad", sale["id"]) is None
        assert "not-the-token-at-all" not in multi.logs.getvalue()


async def test_json_and_test_pings(tmp_path: Path) -> None:
    """A JSON body is 415 (Gumroad posts forms); a test Ping is acknowledged and makes nothing."""
    async with gumroad_stack(tmp_path) as (multi, market):
        sale = market.sell("pencil")
        sender = pinger(multi)
        async with httpx.AsyncClient() as client:
            as_json = await client.post(sender.ping_url(), json=ping_form(sale))
        assert as_json.status_code == 415
        assert (await sender.ping(ping_form(sale, test=True))).json() == {"status": "ignored"}
        assert await multi.job("gumroad", sale["id"]) is None


async def test_refund_before_delivery_cancels(tmp_path: Path) -> None:
    """A refund resource POST before the worker ran cancels the order: nothing is generated or sent."""
    async with gumroad_stack(tmp_path) as (multi, market):
        sale = market.sell("pencil")
        sender = pinger(multi)
        await sender.ping(ping_form(sale))
        sale["refunded"] = True
        marked = await sender.ping(ping_form(sale, "refund"))
        assert marked.status_code == 200 and marked.json()["status"] == "cancelled"
        await multi.drain()
        assert multi.seller.accepted() == [] and (await multi.job("gumroad", sale["id"])).state == "cancelled"


async def test_refund_and_dispute_after_delivery_flag(tmp_path: Path) -> None:
    """After delivery a refund or a dispute flags the order (logged as a warning); dispute_won is ignored."""
    async with gumroad_stack(tmp_path) as (multi, market):
        sender = pinger(multi)
        refunded, disputed = market.sell("pencil"), market.sell("pencil")
        for sale in (refunded, disputed):
            await sender.ping(ping_form(sale))
        await multi.drain()
        assert len(multi.seller.accepted()) == 2
        assert (await sender.ping(ping_form(refunded, "refund"))).json()["status"] == "flagged"
        assert (await sender.ping(ping_form(disputed, "dispute"))).json()["status"] == "flagged"
        assert (await sender.ping(ping_form(disputed, "dispute_won"))).json() == {"status": "ignored"}
        assert {"order.refunded", "order.disputed"} <= set(multi.log_events())


async def test_refunded_sale_is_not_delivered_when_reread(tmp_path: Path) -> None:
    """A sale refunded before the worker re-reads it (no refund POST configured) dies unpaid instead of delivering."""
    async with gumroad_stack(tmp_path) as (multi, market):
        sale = market.sell("pencil")
        await pinger(multi).ping(ping_form(sale))
        sale["refunded"] = True
        await multi.drain()
        job = await multi.job("gumroad", sale["id"])
        assert job.state == "dead" and "refunded" in job.last_error and multi.seller.accepted() == []


async def test_hourly_resend_after_a_refusal(tmp_path: Path) -> None:
    """A Ping answered 429 is resent by Gumroad an hour later and then accepted: one job, one delivery."""
    async with gumroad_stack(tmp_path, server={"rate_limit": {"per_second": 0.001, "burst": 1}}) as (multi, market):
        sender = pinger(multi)
        first, second = market.sell("pencil"), market.sell("pencil")
        assert (await sender.ping(ping_form(first))).status_code == 200
        assert (await sender.ping(ping_form(second))).status_code == 429
        assert await multi.job("gumroad", second["id"]) is None
        multi.clock.advance(RETRY_DELAYS[0] - 1)
        assert await sender.resend_due() == 0
        multi.clock.advance(1)
        assert await sender.resend_due() == 1 and sender.pending == []
        await multi.drain()
        assert len(multi.seller.accepted()) == 2


async def test_sales_list_pages_for_the_watchdog(tmp_path: Path) -> None:
    """With an access token the store lists paid sales since a time, oldest first per page, following page_key;
    refunded sales and sales before ``since`` are left out."""
    async with gumroad_stack(tmp_path) as (multi, market):
        adapter = multi.daemon.stores["gumroad"].marketplace
        assert isinstance(adapter, GumroadApiAdapter) and isinstance(adapter, OrderListing)
        old = market.sell("pencil")
        multi.clock.advance(60)
        since = multi.clock.now()
        sales = [market.sell("pencil", email=f"b{i}@example.org") for i in range(4)]
        sales[1]["refunded"] = True
        listed: list[str] = []
        cursor: str | None = None
        pages = 0
        while True:
            page = await adapter.list_paid_orders(since, cursor)
            pages += 1
            listed += [o.order.order_id for o in page.orders if o.deliverable]
            cursor = page.cursor
            if cursor is None:
                break
        assert pages == 3  # five sales, two a page
        assert sorted(listed) == sorted(s["id"] for s in (sales[0], sales[2], sales[3])) and old["id"] not in listed


async def test_sales_list_with_a_refused_token_is_an_error(tmp_path: Path) -> None:
    """The sales list answered 401 raises MarketplaceError (the seller must act), not an empty page."""
    async with gumroad_stack(tmp_path) as (multi, market):
        adapter = multi.daemon.stores["gumroad"].marketplace
        assert isinstance(adapter, GumroadApiAdapter)
        market.sell("pencil")
        market.access_token = secrets.token_urlsafe(24)
        with pytest.raises(MarketplaceError, match="401"):
            await adapter.list_paid_orders(0.0)


async def test_access_token_wrong_is_retried_not_lost(tmp_path: Path) -> None:
    """A refused access token leaves the job waiting to retry (the seller fixes the token), not delivered or dead."""
    async with gumroad_stack(tmp_path) as (multi, market):
        market.access_token = secrets.token_urlsafe(24)
        sale = market.sell("pencil")
        await pinger(multi).ping(ping_form(sale))
        await multi.drain()
        job = await multi.job("gumroad", sale["id"])
        assert job.state == "retry_wait" and multi.seller.accepted() == []


async def test_refused_pings_are_resent_hourly_three_times_then_dropped(tmp_path: Path) -> None:
    """A Ping the daemon refuses (a wrong token in Gumroad's settings) is resent after 1, 2 and 3 hours, then given
    up; none of the four attempts stores anything."""
    async with gumroad_stack(tmp_path) as (multi, market):
        sender = pinger(multi, "a-token-gumroad-was-given-0000")
        sale = market.sell("pencil")
        assert (await sender.ping(ping_form(sale))).status_code == 403
        for _hour in range(3):
            multi.clock.advance(RETRY_DELAYS[0])
            assert await sender.resend_due() == 1
        assert sender.pending == [] and len(sender.dropped) == 1 and len(sender.sent) == 4
        assert {s.status for s in sender.sent} == {403} and await multi.job("gumroad", sale["id"]) is None


async def test_reread_sale_of_another_product_is_not_delivered(tmp_path: Path) -> None:
    """When the API shows the sale for another product than the Ping said, the job dies (product mismatch)."""
    async with gumroad_stack(tmp_path) as (multi, market):
        sale = market.sell("pencil")
        await pinger(multi).ping(ping_form(sale))
        sale |= {"product_id": "other-id==", "product_permalink": "eraser"}
        await multi.drain()
        job = await multi.job("gumroad", sale["id"])
        assert job.state == "dead" and "product mismatch" in job.last_error and multi.seller.accepted() == []
