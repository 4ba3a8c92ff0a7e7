"""Which listings a delivery marks for stock sync when its product draws on a shared pool: every product of every
store naming the pool, and the ids a pooled default product has served, whichever store delivered."""

from __future__ import annotations

from typing import Any

import pytest

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


@pytest.mark.parametrize(
    ("delivered", "marked"),
    [
        (("sx", "serial"), {("soft-a", "4711")}),  # Sellix lists no count: only the SoftStore product on the pool
        (("soft-b", "abc"), {("soft-b", "abc"), ("soft-a", "4711")}),  # an id served by a pooled default product
        (("soft-a", "own"), {("soft-a", "own")}),  # a product with its own pool: itself alone, as before pools
    ],
)
def test_a_delivery_marks_every_listing_on_its_pool(delivered: tuple[str, str], marked: set[tuple[str, str]]) -> None:
    """A delivery from a shared pool marks every listing drawing on it, whichever store delivered; a product with
    its own pool marks only itself."""
    sync = _sync()
    sync.mark(*delivered)
    assert set(sync.pending) == marked


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
