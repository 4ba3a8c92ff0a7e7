"""One stock pool across stores, end to end over sockets: Sellix, Shoppy and SoftStore products draw on one pool;
concurrent orders from two stores never share a key, the low-stock alert fires once for the pool, ``stock import
--pool`` wakes every store's waiting orders and stock sync sets the SoftStore listing from the pool; two replicas
on one PostgreSQL database share the pool as safely."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

from delivery_daemon.cli import main
from delivery_daemon.reference import sellix, shoppy
from delivery_daemon.reference.standard_webhooks import new_secret
from delivery_daemon.storage.models import JobState
from delivery_daemon.storage.stock_pool import StockPool, pool_owner
from tests.support.multistore import Multi, multi_stack

POOL = "shared"
SERIAL = {"generator": "stock", "pool": POOL}
PRODUCTS = {"sellix": {"serial": SERIAL}, "shoppy": {"serial-x": SERIAL}, "softstore": {"serials": SERIAL}}


def _config(tmp_path: Path, multi: Multi, url: str) -> Path:
    """The stack's three pool stores as a configuration file for the commands (same database, same secrets)."""
    assert multi.market is not None
    channel = {"channel": "webhook", "webhook": {"url": "http://127.0.0.1:9/hooks", "secret": new_secret()}}
    stores: list[dict[str, Any]] = [
        {"name": "sellix", "marketplace": "sellix", "webhook_secret": multi.secrets["sellix"], "delivery": channel},
        {"name": "shoppy", "marketplace": "shoppy", "webhook_secret": multi.secrets["shoppy"], "delivery": channel},
        {
            "name": "softstore",
            "marketplace": "softstore",
            "api_url": multi.market.api_base,
            "api_key": multi.secrets["softstore"],
        },
    ]
    for store in stores:
        store["products"] = PRODUCTS[str(store["name"])]
    path = tmp_path / "cli.yaml"
    document = {
        "database": {"url": url},
        "security": {"allowed_networks": ["127.0.0.0/8"]},
        "pools": {POOL: {"low_stock_threshold": 2}},
        "stores": stores,
    }
    path.write_text(yaml.safe_dump(document))
    return path


def _events(multi: Multi, name: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in multi.logs.getvalue().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == name]


async def _run(argv: list[str]) -> int:
    return int(await anyio.to_thread.run_sync(main, argv))


async def _settle(multi: Multi, orders: list[tuple[str, str]]) -> list[Any]:
    """Drain until no order is left to retry: on PostgreSQL a claim that meets keys locked by a concurrent claim is
    retried half a second later (the other claim may roll back), not parked as out of stock."""
    for _ in range(20):
        await multi.drain()
        jobs = [await multi.job(store, order_id) for store, order_id in orders]
        if not any(job.state == JobState.RETRY_WAIT.value for job in jobs):
            return jobs
        multi.clock.advance(5)
    raise AssertionError("orders still retrying")


async def test_two_stores_draw_on_one_pool(tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Orders of two marketplaces share 6 keys: 6 distinct keys go out, the rest wait, one stock.low names the pool,
    the SoftStore listing follows the pool, and ``stock import --pool`` delivers every store's waiting orders."""
    async with multi_stack(
        tmp_path,
        products=PRODUCTS,
        pools={POOL: {"low_stock_threshold": 2}},
        softstore=True,
        database={"url": db_url},
    ) as multi:
        assert multi.market is not None
        multi.market.add_product("serials", count=1000)
        config = str(_config(tmp_path, multi, db_url))
        keys = tmp_path / "keys.txt"
        keys.write_text("\n".join(f"POOL-{i}" for i in range(6)))
        assert await _run(["stock", "import", "--config", config, "--pool", POOL, str(keys)]) == 0
        out = capsys.readouterr().out
        assert "imported 6 keys for pool shared, skipped 0 duplicates; 0 waiting orders requeued" in out
        assert "softstore/serials: listed count 1000 -> 6" in out
        assert multi.market.products["serials"].count == 6

        sellix_orders = [sellix.order("serial") for _ in range(4)]
        shoppy_orders = [shoppy.order("serial-x") for _ in range(4)]
        answers = await asyncio.gather(
            *(multi.sellix().send("order:paid", data) for data in sellix_orders),
            *(multi.shoppy().send(100, data) for data in shoppy_orders),
        )
        assert {answer.status_code for answer in answers} == {200}
        jobs = await _settle(
            multi, [("sellix", d["uniqid"]) for d in sellix_orders] + [("shoppy", d["id"]) for d in shoppy_orders]
        )
        states = [job.state for job in jobs]
        assert states.count(JobState.DELIVERED.value) == 6 and states.count(JobState.WAITING.value) == 2
        delivered = [key for r in multi.seller.accepted() for key in r.body["data"]["keys"]]
        assert sorted(delivered) == [f"POOL-{i}" for i in range(6)]  # each key once, whichever store took it
        assert {r.body["data"]["store"] for r in multi.seller.accepted()} == {"sellix", "shoppy"}
        [low] = _events(multi, "stock.low")
        assert (low["pool"], low["remaining"], low["threshold"]) == (POOL, 2, 2) and "store" not in low

        # No SoftStore order was delivered, but its listing draws on the pool the others emptied.
        sync = multi.daemon.stock_sync
        assert ("softstore", "serials") in sync.pending
        multi.clock.advance(3600)
        results = await sync.flush_due()
        assert [(r.store, r.product_id, r.count) for r in results] == [("softstore", "serials", 0)]
        assert multi.market.products["serials"].count == 0

        assert await _run(["stock", "status", "--config", config, "--pool", POOL]) == 0
        status = capsys.readouterr().out.splitlines()
        assert status[1].split()[:4] == [POOL, "0", "6", "2"]
        assert "sellix/serial, shoppy/serial-x, softstore/serials" in status[1]

        keys.write_text("\n".join(f"POOL-{i}" for i in range(6, 9)))
        assert await _run(["stock", "import", "--config", config, "--pool", POOL, str(keys)]) == 0
        assert "3 keys for pool shared, skipped 0 duplicates; 2 waiting orders requeued" in capsys.readouterr().out
        assert multi.market.products["serials"].count == 3  # the import synced the listing
        await multi.drain()
        now = [(await multi.job(j.store, j.order_id)).state for j in jobs]
        assert now == [JobState.DELIVERED.value] * 8
        multi.clock.advance(3600)
        await sync.flush_due()
        assert multi.market.products["serials"].count == 1  # the other stores' deliveries synced it

        placed = await multi.market.place_order("serials")  # the third marketplace takes the last key
        await multi.drain()
        accepted = multi.market.accepted(placed.id_order)
        assert accepted is not None
        delivered += [key for r in multi.seller.accepted()[6:] for key in r.body["data"]["keys"]]
        assert sorted([*delivered, accepted.json["text"]]) == [f"POOL-{i}" for i in range(9)]
        assert not any(f"POOL-{i}" in multi.logs.getvalue() for i in range(9))  # keys never reach a log line


async def test_product_form_of_import_fills_the_pool(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``stock import --store S --product P`` for a product drawing on a pool imports into the pool, so the other
    store's orders get those keys too; ``stock status`` shows the pool, not an unreachable product stock."""
    async with multi_stack(tmp_path, products=PRODUCTS, pools={POOL: {}}, softstore=True, database=None) as multi:
        assert multi.market is not None
        multi.market.add_product("serials", count=1000)
        url = f"sqlite:///{tmp_path / 'multi.db'}"
        config = str(_config(tmp_path, multi, url))
        data = shoppy.order("serial-x")
        assert (await multi.shoppy().send(100, data)).status_code == 200
        await multi.drain()
        assert (await multi.job("shoppy", data["id"])).state == JobState.WAITING.value
        keys = tmp_path / "keys.txt"
        keys.write_text("ONE-KEY\n")
        argv = ["stock", "import", "--config", config, "--store", "sellix", "--product", "serial", "--no-sync"]
        assert await _run([*argv, str(keys)]) == 0
        out = capsys.readouterr().out
        assert "imported 1 keys for pool shared (drawn on by sellix/serial)" in out and "1 waiting orders" in out
        await multi.drain()
        [delivery] = multi.seller.accepted()
        assert delivery.body["data"]["keys"] == ["ONE-KEY"] and delivery.body["data"]["store"] == "shoppy"
        assert await _run(["stock", "status", "--config", config]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].split()[0] == "pool" and lines[1].split()[:4] == [POOL, "0", "1", "0"]


@pytest.mark.postgres
async def test_two_replicas_serve_two_stores_from_one_pool(tmp_path: Path, pg_url: str) -> None:
    """Two daemons on one PostgreSQL database, one taking Sellix orders and one Shoppy orders at the same time,
    hand each of the pool's 10 keys to one order only and log one stock.low for the pool."""
    pools = {POOL: {"low_stock_threshold": 3}}
    products = {"sellix": {"serial": SERIAL}, "shoppy": {"serial-x": SERIAL}}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with (
        multi_stack(tmp_path / "a", products=products, pools=pools, database={"url": pg_url}) as first,
        multi_stack(tmp_path / "b", products=products, pools=pools, database={"url": pg_url}) as second,
    ):
        resources = first.daemon.resources
        assert resources.engine is not None
        StockPool(resources.engine, first.clock, resources.cipher).import_keys(
            *pool_owner(POOL), [f"R-{i}" for i in range(10)]
        )
        sellix_orders = [sellix.order("serial") for _ in range(8)]
        shoppy_orders = [shoppy.order("serial-x") for _ in range(8)]
        answers = await asyncio.gather(
            *(first.sellix().send("order:paid", data) for data in sellix_orders),
            *(second.shoppy().send(100, data) for data in shoppy_orders),
        )
        assert {answer.status_code for answer in answers} == {200}
        # Each replica works both stores' queue (one database): drained together, their claims overlap.
        for _ in range(20):
            await asyncio.gather(first.drain(), second.drain())
            jobs = [await first.job("sellix", d["uniqid"]) for d in sellix_orders]
            jobs += [await first.job("shoppy", d["id"]) for d in shoppy_orders]
            if not any(job.state == JobState.RETRY_WAIT.value for job in jobs):
                break
            first.clock.advance(5)
            second.clock.advance(5)
        states = [job.state for job in jobs]
        assert states.count(JobState.DELIVERED.value) == 10 and states.count(JobState.WAITING.value) == 6
        delivered = [
            key for multi in (first, second) for r in multi.seller.accepted() for key in r.body["data"]["keys"]
        ]
        assert sorted(delivered) == sorted(f"R-{i}" for i in range(10))
        lows = [e for multi in (first, second) for e in _events(multi, "stock.low")]
        assert [(e["pool"], e["remaining"]) for e in lows] == [(POOL, 3)]
