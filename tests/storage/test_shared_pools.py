"""Shared stock pools in the database, on SQLite and PostgreSQL: the stock generators of two stores drawing on one
pool, each on its own engine (two replicas), never hand one key to two orders, alert once per pool, and leave the
stores' own pools alone."""

from __future__ import annotations

import io
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from delivery_daemon_plugins.stock import StockGenerator, StockOptions

from delivery_daemon.clock import ManualClock
from delivery_daemon.errors import OutOfStock, Retry
from delivery_daemon.generators.resources import ResourceHub, Resources, SharedPool
from delivery_daemon.logs import configure_logging
from delivery_daemon.storage.cipher import Cipher, new_key_line, parse_keys
from delivery_daemon.storage.engine import create_db_engine, create_schema
from delivery_daemon.storage.stock_pool import POOL_STORE, StockPool, pool_owner
from delivery_daemon.testing import fake_order

CIPHER = Cipher(parse_keys(new_key_line(), "test"))


@pytest.fixture(autouse=True)
def logs() -> io.StringIO:
    """Log lines of the test (structlog is global: every test here gets its own stream)."""
    stream = io.StringIO()
    configure_logging("json", "info", stream=stream)
    return stream


def _replica(url: str) -> ResourceHub:
    """One daemon's services on its own engine (a replica's connection pool)."""
    engine = create_db_engine(url)
    create_schema(engine)
    return ResourceHub(clock=ManualClock(), engine=engine, cipher=CIPHER)


def _generator(hub: ResourceHub, store: str, product: str, threshold: int | None = None) -> StockGenerator:
    pool = SharedPool("shared", threshold)
    return StockGenerator(
        StockOptions(), Resources(store=store, product_id=product, plugin="stock", hub=hub, pool=pool)
    )


def _take(generator: StockGenerator, store: str, product: str, orders: int, start: threading.Barrier) -> list[str]:
    """Claim one key per order; an order that meets keys locked by a concurrent claim (Retry) tries again."""
    start.wait()
    got: list[str] = []
    for n in range(orders):
        order = fake_order(store=store, product_id=product, order_id=f"{store}-{n}", quantity=1)
        while True:
            try:
                got.extend(generator.generate(order).keys)
                break
            except Retry:
                continue
            except OutOfStock:
                break
    return got


def test_two_stores_on_two_replicas_never_share_a_key(db_url: str, logs: io.StringIO) -> None:
    """Two stores' generators on two engines take 80 orders at once from 60 keys: 60 distinct keys, one stock.low
    naming the pool, and the pool empty."""
    first, second = _replica(db_url), _replica(db_url)
    assert first.engine is not None
    StockPool(first.engine, first.clock, CIPHER).import_keys(*pool_owner("shared"), [f"K{i:02d}" for i in range(60)])
    sellix = _generator(first, "sellix", "serial", threshold=5)
    shoppy = _generator(second, "shoppy", "serial-x", threshold=5)
    start = threading.Barrier(2)
    with ThreadPoolExecutor(2) as executor:
        a = executor.submit(_take, sellix, "sellix", "serial", 40, start)
        b = executor.submit(_take, shoppy, "shoppy", "serial-x", 40, start)
        issued = a.result() + b.result()
    assert sorted(issued) == sorted(f"K{i:02d}" for i in range(60))
    lows = [json.loads(line) for line in logs.getvalue().splitlines() if '"stock.low"' in line]
    assert [(e["pool"], e["remaining"]) for e in lows] == [("shared", 5)]
    assert sellix.stock_remaining() == shoppy.stock_remaining("any-id") == 0


def test_same_order_id_in_two_stores_gets_two_keys(db_url: str) -> None:
    """Claims are idempotent per store and order: the same order id in two stores takes two keys, and asking
    again returns each store's own key."""
    hub = _replica(db_url)
    assert hub.engine is not None
    StockPool(hub.engine, hub.clock, CIPHER).import_keys(*pool_owner("shared"), ["A", "B", "C"])
    order = {"order_id": "o-1", "quantity": 1}
    one = _generator(hub, "one", "p").generate(fake_order(store="one", product_id="p", **order)).keys
    two = _generator(hub, "two", "q").generate(fake_order(store="two", product_id="q", **order)).keys
    again = _generator(hub, "one", "p").generate(fake_order(store="one", product_id="p", **order)).keys
    assert one == again == ("A",) and two == ("B",)


def test_products_without_a_pool_keep_their_own(db_url: str) -> None:
    """A product with no pool takes only its own (store, product) keys, and the shared pool only its rows."""
    hub = _replica(db_url)
    assert hub.engine is not None
    stock = StockPool(hub.engine, hub.clock, CIPHER)
    stock.import_keys("one", "p", ["OWN"])
    stock.import_keys(*pool_owner("shared"), ["SHARED"])
    own = StockGenerator(StockOptions(), Resources(store="one", product_id="p", plugin="stock", hub=hub))
    assert own.generate(fake_order(store="one", product_id="p", order_id="x")).keys == ("OWN",)
    assert _generator(hub, "one", "p").generate(fake_order(store="one", product_id="p", order_id="y")).keys == (
        "SHARED",
    )
    assert {(lv.store, lv.product_id, lv.issued) for lv in stock.levels()} == {
        ("one", "p", 1),
        (POOL_STORE, "shared", 1),
    }


def test_pool_threshold_replaces_the_product_option() -> None:
    """A pooled product's own low_stock_threshold is refused: the pool's applies."""
    hub = ResourceHub()
    resources = Resources(store="s", product_id="p", plugin="stock", hub=hub, pool=SharedPool("shared", 3))
    with pytest.raises(ValueError, match=r"pools\.shared\.low_stock_threshold"):
        StockGenerator(StockOptions(low_stock_threshold=2), resources)


def test_move_rehomes_a_products_free_keys_into_the_pool(db_url: str) -> None:
    """``move`` re-seals a product's unissued keys into the pool (claimable there in plaintext), drops those already
    in it and leaves issued keys with their orders."""
    hub = _replica(db_url)
    assert hub.engine is not None
    stock = StockPool(hub.engine, hub.clock, CIPHER)
    stock.import_keys("one", "p", ["K1", "K2", "K3", "K4"])
    stock.import_keys(*pool_owner("shared"), ["K4"])
    assert stock.claim("one", "p", "one:o1", 1) == ["K1"]
    result = stock.move("one", "p", pool_owner("shared"), batch=2)
    assert (result.added, result.duplicates) == (2, 1)
    assert {(lv.store, lv.product_id, lv.available, lv.issued) for lv in stock.levels()} == {
        ("one", "p", 0, 1),
        (POOL_STORE, "shared", 3, 0),
    }
    gen = _generator(hub, "two", "q")
    assert gen.generate(fake_order(store="two", product_id="q", order_id="o2", quantity=3)).keys == ("K4", "K2", "K3")
    assert stock.claim("one", "p", "one:o1", 1) == ["K1"]  # the issued key is still its order's
