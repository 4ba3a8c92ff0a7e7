"""Which listings a delivery marks for stock sync when its product draws on a shared pool: every product of every
store naming the pool, and the ids a pooled default product has served, whichever store delivered."""

from __future__ import annotations

from typing import Any

from delivery_daemon.clock import ManualClock
from delivery_daemon.compose import default_marketplaces
from delivery_daemon.config import parse_settings
from delivery_daemon.generators.discovery import discover
from delivery_daemon.pipeline.stores import build_stores
from delivery_daemon.stock.sync import StockSync, pool_listings

STOCK = {"generator": "stock", "pool": "shared"}


def _sync() -> StockSync:
    channel = {"channel": "webhook", "webhook": {"url": "http://127.0.0.1:9/h", "secret": "whsec_" + "A" * 24}}
    soft: dict[str, Any] = {"marketplace": "softstore", "api_url": "http://127.0.0.1:9/api/v1", "api_key": "k" * 20}
    settings = parse_settings(
        {
            "security": {"allowed_networks": ["127.0.0.0/8"]},
            "pools": {"shared": {}},
            "stores": [
                {
                    "name": "sx",
                    "marketplace": "sellix",
                    "webhook_secret": "s" * 16,
                    "delivery": channel,
                    "products": {"serial": STOCK},
                },
                {"name": "soft-a", **soft, "products": {"4711": STOCK, "own": {"generator": "stock"}}},
                {"name": "soft-b", **soft, "default": STOCK},
            ],
        },
        environ={},
    )
    clock = ManualClock()
    stores = build_stores(settings, default_marketplaces(), dict(discover()), clock)
    return StockSync(lambda: stores, settings.stock_sync, clock)


def test_a_delivery_on_a_store_without_listings_marks_every_listing_on_the_pool() -> None:
    """A Sellix delivery from the pool marks the SoftStore product on it (Sellix itself lists no count)."""
    sync = _sync()
    sync.mark("sx", "serial")
    assert set(sync.pending) == {("soft-a", "4711")}


def test_a_pooled_default_delivery_marks_itself_and_the_pool() -> None:
    """An id served by a pooled default product is marked with every other listing on the pool."""
    sync = _sync()
    sync.mark("soft-b", "abc")
    assert set(sync.pending) == {("soft-b", "abc"), ("soft-a", "4711")}


def test_a_product_with_its_own_pool_marks_only_itself() -> None:
    """A delivery of a product without a pool marks that product alone, as before pools existed."""
    sync = _sync()
    sync.mark("soft-a", "own")
    assert set(sync.pending) == {("soft-a", "own")}


def test_pool_listings_name_configured_products_and_known_default_ids() -> None:
    """Configured products come from the stores; a default product's ids only once known."""
    sync = _sync()
    stores = sync._stores()
    assert pool_listings(stores, "shared") == [("sx", "serial"), ("soft-a", "4711")]
    assert pool_listings(stores, "shared", {("soft-b", "x"), ("soft-a", "4711")}) == [
        ("sx", "serial"),
        ("soft-a", "4711"),
        ("soft-b", "x"),
    ]
