"""The adapters' order lists (:class:`~delivery_daemon.marketplaces.listing.OrderListing`) against the reference
marketplaces on loopback: which orders count as paid and new, how pages follow, what is deliverable, and the dates
read from each document's format."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest

from delivery_daemon.clock import ManualClock
from delivery_daemon.config import DeliverySettings, StoreSettings
from delivery_daemon.errors import AuthenticationFailed, Retry
from delivery_daemon.http.serving import serve
from delivery_daemon.marketplaces.base import AdapterContext
from delivery_daemon.marketplaces.listing import OrderListing
from delivery_daemon.marketplaces.order_lists import epoch_seconds, utc_seconds
from delivery_daemon.marketplaces.sellix import ListingSellixAdapter, Sellix, SellixAdapter
from delivery_daemon.marketplaces.softstore import SoftStoreAdapter
from delivery_daemon.reference.sellix_shop import SellixShop
from delivery_daemon.reference.softstore import SoftStoreMarketplace

WEBHOOK = {"channel": "webhook", "webhook": {"url": "https://seller.example.org/hook", "secret": "whsec_" + "A" * 24}}


def context(store: dict[str, Any], clock: ManualClock) -> AdapterContext:
    return AdapterContext(StoreSettings.model_validate(store), "stores[0]", clock, DeliverySettings(timeout=5))


@contextlib.asynccontextmanager
async def sellix(
    page_size: int = 2, **store: Any
) -> AsyncIterator[tuple[SellixShop, ListingSellixAdapter, ManualClock]]:
    clock = ManualClock()
    shop = SellixShop(secrets.token_hex(16), now=clock.now, page_size=page_size)
    async with serve(shop.app) as server:
        settings = {
            "name": "s",
            "marketplace": "sellix",
            "webhook_secret": "x" * 32,
            "api_key": shop.api_key,
            "api_url": server.url,
            "delivery": WEBHOOK,
            **store,
        }
        adapter = Sellix().create(context(settings, clock))
        assert isinstance(adapter, ListingSellixAdapter)
        try:
            yield shop, adapter, clock
        finally:
            await adapter.aclose()


def test_dates_of_each_document() -> None:
    """SoftStore's zone-less date and time are UTC; Sellix's unix seconds and ISO date-times both read."""
    assert utc_seconds("2026-04-28", "13:46:13") == 1777383973.0
    assert utc_seconds("28/04/2026", "13:46") is None and utc_seconds(None, "1") is None
    assert epoch_seconds(1587656376) == epoch_seconds("1587656376") == 1587656376.0
    assert epoch_seconds("2026-04-28T13:46:13Z") == epoch_seconds("2026-04-28T13:46:13") == 1777383973.0
    assert epoch_seconds(True) is None and epoch_seconds("soon") is None


def test_sellix_lists_only_with_an_api_key() -> None:
    """Without api_key a Sellix store is no order listing (the watchdog skips it); with one it is."""
    clock = ManualClock()
    plain = Sellix().create(context({"name": "s", "marketplace": "sellix", "webhook_secret": "x" * 32}, clock))
    assert type(plain) is SellixAdapter and not isinstance(plain, OrderListing)


async def test_sellix_pages_newest_first_until_older_than_since() -> None:
    """Pages are asked for while the oldest order on a page is not older than since; only COMPLETED, not
    self-delivered orders are listed, a dynamic product's as not deliverable."""
    async with sellix(page_size=2) as (shop, adapter, clock):
        old = await shop.place_order("svc-0")
        clock.advance(100)
        since = clock.now()
        kept = [await shop.place_order("svc-1", 3)]
        clock.advance(1)
        kept.append(await shop.place_order("dyn", product_type="DYNAMIC"))
        await shop.place_order("keys", product_type="SERIALS")
        pending = await shop.place_order("svc-2")
        pending["status"] = "PENDING"
        first = await adapter.list_paid_orders(since)
        assert first.cursor == "2" and first.orders == []  # the newest two: pending and self-delivered
        second = await adapter.list_paid_orders(since, first.cursor)
        assert [listed.order.order_id for listed in second.orders] == [kept[0]["uniqid"], kept[1]["uniqid"]]
        service, dynamic = second.orders
        assert (
            service.deliverable
            and service.order.payload["quantity"] == 3
            and service.order.payload["event"] == "listed"
        )
        assert not dynamic.deliverable and dynamic.why_not is not None and "dynamic" in dynamic.why_not
        assert second.cursor == "3"
        third = await adapter.list_paid_orders(since, second.cursor)
        assert third.cursor is None and old["uniqid"] not in {o.order.order_id for o in third.orders}
        assert [target for target, _ in shop.requests] == ["/orders?page=1", "/orders?page=2", "/orders?page=3"]


async def test_sellix_list_failures_are_retry_or_refused() -> None:
    """A 5xx is Retry; a wrong API secret is AuthenticationFailed, and the secret is one the redactor knows."""
    async with sellix() as (shop, adapter, _clock):
        assert shop.api_key in adapter.secrets()
        shop.list_failures.append(503)
        with pytest.raises(Retry):
            await adapter.list_paid_orders(0.0)
        shop.api_key = "another"
        with pytest.raises(AuthenticationFailed):
            await adapter.list_paid_orders(0.0)


async def test_softstore_lists_paid_orders_since_and_none_is_deliverable() -> None:
    """SoftStore's one-page list keeps paid orders placed since, oldest first, each raised: no delivery token."""
    clock = ManualClock()
    market = SoftStoreMarketplace(api_key=secrets.token_hex(20), clock=clock.now)
    market.add_product("p")
    async with serve(market.app) as server:
        market.bind(server.url)
        adapter = SoftStoreAdapter(
            context(
                {"name": "s", "marketplace": "softstore", "api_url": market.api_base, "api_key": market._api_key}, clock
            )
        )
        try:
            await market.place_order("p", send_webhook=False)
            clock.advance(60)
            since = clock.now()
            first = await market.place_order("p", 2, send_webhook=False)
            await market.place_order("p", status="wait", send_webhook=False)
            clock.advance(5)
            second = await market.place_order("p", send_webhook=False)
            page = await adapter.list_paid_orders(since)
            assert page.cursor is None
            assert [listed.order.order_id for listed in page.orders] == [first.id_order, second.id_order]
            assert [listed.created_at for listed in page.orders] == [since, since + 5]
            assert not any(listed.deliverable for listed in page.orders)
            assert all("only in the webhook" in (listed.why_not or "") for listed in page.orders)
        finally:
            await adapter.aclose()
