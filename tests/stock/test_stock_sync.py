"""Stock sync: the listed count on the reference SoftStore follows the stock pool (after imports, deliveries, on
demand), failures are retried and logged, unlimited products are left alone unless they have a listed_count."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

from delivery_daemon.cli import main
from delivery_daemon.config import parse_settings
from delivery_daemon.errors import ConfigError
from delivery_daemon.storage.models import JobState
from delivery_daemon.storage.stock_pool import StockPool
from tests.support.stack import PRODUCT, STORE, Stack

SERIALS = "serials"
FIXED = "fixed"
STOCK_PRODUCTS = {SERIALS: {"generator": "stock"}, FIXED: {"generator": "pattern", "listed_count": 50}}


def updates(stack: Stack, product: str | None = None) -> list[Any]:
    """The JSON bodies of ``POST /products/update/{id}`` the marketplace received (for one product, or all)."""
    suffix = f"/products/update/{product}" if product else None
    return [
        r.json
        for r in stack.market.requests
        if "/products/update/" in r.path and (suffix is None or r.path.endswith(suffix))
    ]


def events(stack: Stack, name: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in stack.logs.getvalue().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == name]


def import_keys(stack: Stack, n: int, product: str = SERIALS) -> None:
    # Sealed with the daemon's own key, as `stock import` does, so deliveries take the production path.
    pool = StockPool(stack.daemon.engine, stack.clock, stack.daemon.resources.cipher)
    pool.import_keys(STORE, product, [f"K-{product}-{i}" for i in range(n)])


def cli_config(tmp_path: Path, stack: Stack) -> Path:
    """The stack's store as a configuration file, for the commands (same database, same marketplace)."""
    store = {
        "name": STORE,
        "marketplace": "softstore",
        "api_url": stack.market.api_base,
        "api_key": stack.api_key,
        "products": {PRODUCT: {"generator": "pattern"}, **STOCK_PRODUCTS},
    }
    path = tmp_path / "cli.yaml"
    path.write_text(yaml.safe_dump({"database": {"url": stack.settings.database.url}, "stores": [store]}))
    return path


async def deliver(stack: Stack, product: str, orders: int) -> None:
    for _ in range(orders):
        await stack.market.place_order(product)
    await stack.drain()


async def test_stock_import_sets_the_listed_count_at_once(
    make_stack: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``stock import`` sets the product's count on SoftStore to the keys in the pool, with no moderation."""
    async with make_stack(products=STOCK_PRODUCTS) as stack:
        stack.market.add_product(SERIALS, count=1000)
        keys = tmp_path / "keys.txt"
        keys.write_text("\n".join(f"S-{i}" for i in range(12)))
        config = cli_config(tmp_path, stack)
        code = await anyio.to_thread.run_sync(
            main, ["stock", "import", "--config", str(config), "--store", STORE, "--product", SERIALS, str(keys)]
        )
        assert code == 0
        assert f"{STORE}/{SERIALS}: listed count 1000 -> 12" in capsys.readouterr().out
        assert stack.market.products[SERIALS].count == 12
        assert updates(stack) == [{"count": 12}]
        assert stack.market.products[SERIALS].status_moderation == "approved"


async def test_stock_import_no_sync_leaves_the_marketplace_alone(make_stack: Any, tmp_path: Path) -> None:
    """``stock import --no-sync`` only imports: the marketplace is not contacted (the daemon syncs later)."""
    async with make_stack(products=STOCK_PRODUCTS) as stack:
        stack.market.add_product(SERIALS, count=1000)
        keys = tmp_path / "keys.txt"
        keys.write_text("S-1\nS-2\n")
        code = await anyio.to_thread.run_sync(
            main,
            [
                "stock",
                "import",
                "--config",
                str(cli_config(tmp_path, stack)),
                "--store",
                STORE,
                "--product",
                SERIALS,
                "--no-sync",
                str(keys),
            ],
        )
        assert code == 0
        assert stack.market.requests == []
        assert stack.market.products[SERIALS].count == 1000


@pytest.mark.contract("stock_remaining")
async def test_deliveries_are_synced_once_after_the_debounce(make_stack: Any) -> None:
    """Several deliveries make one update, sent only once the debounce is over, with the pool's count."""
    async with make_stack(products=STOCK_PRODUCTS, stock_sync={"debounce": 10}) as stack:
        stack.market.add_product(SERIALS, count=1000)
        import_keys(stack, 10)
        await deliver(stack, SERIALS, 4)
        sync = stack.daemon.stock_sync
        assert set(sync.pending) == {(STORE, SERIALS)}
        assert await sync.flush_due() == []  # inside the debounce window: nothing is sent
        assert updates(stack) == []
        stack.clock.advance(10)
        [result] = await sync.flush_due()
        assert (result.outcome, result.before, result.count) == ("updated", 996, 6)
        assert updates(stack) == [{"count": 6}]
        assert stack.market.products[SERIALS].count == 6
        assert [(e["product_id"], e["before"], e["count"]) for e in events(stack, "stock_sync.updated")] == [
            (SERIALS, 996, 6)
        ]
        stack.clock.advance(60)
        assert await sync.flush_due() == []  # nothing marked since
        assert len(updates(stack)) == 1


async def test_full_pass_skips_unchanged_counts(make_stack: Any) -> None:
    """A full pass reads the listed count and sends no update when it already matches the pool."""
    async with make_stack(products=STOCK_PRODUCTS) as stack:
        stack.market.add_product(SERIALS, count=7)
        stack.market.add_product(FIXED, count=50)
        import_keys(stack, 7)
        results = await stack.daemon.stock_sync.sync_all()
        assert {(r.product_id, r.outcome, r.count) for r in results} == {
            (SERIALS, "unchanged", 7),
            (FIXED, "unchanged", 50),
        }
        assert updates(stack) == []


async def test_sync_stock_command(make_stack: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``softstore sync-stock`` prints a line per synced product; a second run finds nothing to change."""
    async with make_stack(products=STOCK_PRODUCTS) as stack:
        stack.market.add_product(SERIALS, count=1000)
        stack.market.add_product(FIXED, count=3)
        import_keys(stack, 5)
        argv = ["softstore", "sync-stock", "--config", str(cli_config(tmp_path, stack)), "--store", STORE]
        assert await anyio.to_thread.run_sync(main, argv) == 0
        out = capsys.readouterr().out.splitlines()
        assert sorted(out) == [f"{STORE}/{FIXED}: listed count 3 -> 50", f"{STORE}/{SERIALS}: listed count 1000 -> 5"]
        assert await anyio.to_thread.run_sync(main, argv) == 0
        assert sorted(capsys.readouterr().out.splitlines()) == [
            f"{STORE}/{FIXED}: listed count 50 (unchanged)",
            f"{STORE}/{SERIALS}: listed count 5 (unchanged)",
        ]
        assert len(updates(stack)) == 2


async def test_sync_stock_command_failure_exits_1(
    make_stack: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A product SoftStore does not know is reported as a failed sync and the command exits 1."""
    async with make_stack(products=STOCK_PRODUCTS) as stack:
        stack.market.add_product(FIXED, count=50)  # SERIALS is missing at the marketplace
        argv = ["softstore", "sync-stock", "--config", str(cli_config(tmp_path, stack))]
        assert await anyio.to_thread.run_sync(main, argv) == 1
        out = capsys.readouterr().out
        assert f"{STORE}/{SERIALS}: sync failed: SoftStore answered 404: Product not found" in out
        assert stack.api_key not in out


def test_sync_stock_command_refuses_a_store_that_is_not_softstore(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--store naming a non-SoftStore store is a config error (exit 2, one line, the key path)."""
    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "stores": [
                    {
                        "name": "sx",
                        "marketplace": "sellix",
                        "webhook_secret": "s" * 16,
                        "default": {"generator": "pattern"},
                    }
                ]
            }
        )
    )
    assert main(["softstore", "sync-stock", "--config", str(path), "--store", "sx"]) == 2
    assert capsys.readouterr().err.strip() == (
        "delivery-daemon: error: stores[0].marketplace: store 'sx' is not a SoftStore store"
    )


async def test_failed_sync_is_retried_and_logged_without_blocking_delivery(make_stack: Any) -> None:
    """A refused update is logged as stock_sync.failed and retried later; deliveries go on meanwhile."""
    async with make_stack(products=STOCK_PRODUCTS, stock_sync={"debounce": 5, "interval": 300}) as stack:
        stack.market.add_product(SERIALS, count=1000)
        import_keys(stack, 10)
        stack.market.faults.fail_next_product_updates(1, 503)
        await deliver(stack, SERIALS, 2)
        stack.clock.advance(5)
        [failed] = await stack.daemon.stock_sync.flush_due()
        assert failed.outcome == "failed" and "503" in (failed.error or "")
        [event] = events(stack, "stock_sync.failed")
        assert (event["product_id"], event["attempt"], event["retry_in_s"]) == (SERIALS, 1, 5.0)
        assert stack.api_key not in stack.logs.getvalue()

        await deliver(stack, SERIALS, 1)  # the failure holds nothing up
        assert [(await stack.job(o)).state for o in stack.market.orders] == [JobState.DELIVERED.value] * 3

        stack.clock.advance(5)
        [retried] = await stack.daemon.stock_sync.flush_due()
        assert (retried.outcome, retried.count) == ("updated", 7)
        assert stack.market.products[SERIALS].count == 7


@pytest.mark.contract("stock_remaining")
async def test_unlimited_generator_is_left_alone(make_stack: Any) -> None:
    """A product with an unlimited generator (pattern) and no listed_count is never read or updated."""
    async with make_stack() as stack:
        await deliver(stack, PRODUCT, 3)
        stack.clock.advance(60)
        assert await stack.daemon.stock_sync.flush_due() == []
        assert await stack.daemon.stock_sync.sync_all() == []
        assert not [r for r in stack.market.requests if "/products/" in r.path]
        assert stack.market.products[PRODUCT].count == 997


async def test_fixed_listed_count_is_applied(make_stack: Any) -> None:
    """An unlimited product with listed_count keeps that count listed, restored after sales lower it."""
    async with make_stack(products=STOCK_PRODUCTS) as stack:
        stack.market.add_product(FIXED, count=10)
        await deliver(stack, FIXED, 2)
        stack.clock.advance(60)
        [result] = await stack.daemon.stock_sync.flush_due()
        assert (result.product_id, result.before, result.count) == (FIXED, 8, 50)
        assert stack.market.products[FIXED].count == 50


async def test_count_updates_do_not_raise_the_moderation_flag(make_stack: Any) -> None:
    """The sync sends count alone, so SoftStore answers moderation: false and the product stays approved."""
    async with make_stack(products=STOCK_PRODUCTS) as stack:
        stack.market.add_product(SERIALS, count=1000)
        import_keys(stack, 3)
        await stack.daemon.stock_sync.sync_product(STORE, SERIALS)
        [update] = [r for r in stack.market.requests if "/products/update/" in r.path]
        assert update.json == {"count": 3}
        assert update.status == 200
        assert stack.market.products[SERIALS].status_moderation == "approved"
        assert events(stack, "stock_sync.moderation") == []


def test_stock_sync_settings_are_validated() -> None:
    """A negative debounce or a zero interval is a config error naming the key path."""
    for section, key in (({"debounce": -1}, "stock_sync.debounce"), ({"interval": 0}, "stock_sync.interval")):
        with pytest.raises(ConfigError) as caught:
            parse_settings({"stock_sync": section}, environ={})
        assert str(caught.value).startswith(f"{key}: ")
    with pytest.raises(ConfigError) as caught:
        parse_settings(
            {
                "stores": [
                    {
                        "name": "s",
                        "marketplace": "softstore",
                        "products": {"p": {"generator": "pattern", "listed_count": -3}},
                    }
                ]
            },
            environ={},
        )
    assert str(caught.value).startswith("stores[0].products.p.listed_count: ")


async def test_running_daemon_flushes_a_mark_on_its_own_timer(make_stack: Any) -> None:
    """With the worker running, a mark (what a delivery does) starts the debounce timer and the count is synced
    without a command. (Deliveries marking: test_deliveries_are_synced_once_after_the_debounce.)"""
    # prod-2 is at the marketplace from the start, so the pass at start-up succeeds (it lists 0: nothing imported).
    async with make_stack(
        start_worker=True, products={"prod-2": {"generator": "stock"}}, stock_sync={"debounce": 0}
    ) as stack:
        import_keys(stack, 5, product="prod-2")
        sync = stack.daemon.stock_sync
        sync.mark(STORE, "prod-2")  # what the worker does after a delivery; the timer flushes it
        await sync.wait_idle()
        assert stack.market.products["prod-2"].count == 5
        assert sync.pending == {}


async def test_disabled_stock_sync_marks_nothing(make_stack: Any, tmp_path: Path) -> None:
    """With stock_sync.enabled false, deliveries mark nothing and stock import does not touch the marketplace."""
    async with make_stack(products=STOCK_PRODUCTS, stock_sync={"enabled": False}) as stack:
        stack.market.add_product(SERIALS, count=1000)
        import_keys(stack, 5)
        await deliver(stack, SERIALS, 1)
        assert stack.daemon.stock_sync.pending == {}
        config = cli_config(tmp_path, stack)
        document = yaml.safe_load(config.read_text())
        config.write_text(yaml.safe_dump({**document, "stock_sync": {"enabled": False}}))
        keys = tmp_path / "keys.txt"
        keys.write_text("NEW-1\n")
        before = len(stack.market.requests)
        assert (
            await anyio.to_thread.run_sync(
                main, ["stock", "import", "--config", str(config), "--store", STORE, "--product", SERIALS, str(keys)]
            )
            == 0
        )
        assert not [r for r in stack.market.requests[before:] if "/products/" in r.path]


async def test_sync_stock_one_product_served_by_a_default_stock_generator(
    make_stack: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--product`` syncs a product id the store's ``default: stock`` serves (asked by id, not configured)."""
    async with make_stack() as stack:
        import_keys(stack, 4, product="prod-2")
        path = tmp_path / "default.yaml"
        path.write_text(
            yaml.safe_dump(
                {
                    "database": {"url": stack.settings.database.url},
                    "stores": [
                        {
                            "name": STORE,
                            "marketplace": "softstore",
                            "api_url": stack.market.api_base,
                            "api_key": stack.api_key,
                            "default": {"generator": "stock"},
                        }
                    ],
                }
            )
        )
        argv = ["softstore", "sync-stock", "--config", str(path), "--store", STORE, "--product", "prod-2"]
        assert await anyio.to_thread.run_sync(main, argv) == 0
        assert capsys.readouterr().out.strip() == f"{STORE}/prod-2: listed count 1000 -> 4"
        assert stack.market.products["prod-2"].count == 4
        assert stack.market.products[PRODUCT].count == 1000  # not asked for, not touched


async def test_unlimited_products_are_not_even_marked(make_stack: Any) -> None:
    """Deliveries of a product stock sync would skip leave nothing pending (no timer wakes up for them)."""
    async with make_stack(products=STOCK_PRODUCTS) as stack:
        stack.market.add_product(SERIALS, count=1000)
        import_keys(stack, 2)
        await deliver(stack, PRODUCT, 2)
        assert stack.daemon.stock_sync.pending == {}
        await deliver(stack, SERIALS, 1)
        assert set(stack.daemon.stock_sync.pending) == {(STORE, SERIALS)}


async def test_changing_stock_sync_needs_a_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reload that changes ``stock_sync`` lists it in ``restart_needed``; the running sync keeps its settings."""
    from tests.e2e.test_process import reload_with

    monkeypatch.setenv("DD_TEST_API_KEY", "k" * 40)
    runner, reloaded = await reload_with(tmp_path, "stock_sync: {debounce: 1}\n")
    assert "stock_sync" in reloaded["restart_needed"]
    assert runner.daemon.stock_sync.settings.debounce == 10
