"""`delivery-daemon softstore connect` and the store status in `check-config`, against the reference marketplace."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from delivery_daemon.cli import main
from delivery_daemon.http.serving import serve_in_thread
from delivery_daemon.reference.softstore import SoftStoreMarketplace

API_KEY = "seller-api-key-0123456789"
PUBLIC = "https://seller.example/webhooks/main"


@pytest.fixture
def market() -> Iterator[SoftStoreMarketplace]:
    market = SoftStoreMarketplace(api_key=API_KEY, seller_url="https://old.example/hook")
    with serve_in_thread(market.app) as server:
        market.bind(server.url)
        yield market


@pytest.fixture
def config(tmp_path: Path, market: SoftStoreMarketplace) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "database": {"url": f"sqlite:///{tmp_path / 'd.db'}"},
        "stores": [{"name": "main", "marketplace": "softstore", "api_url": market.api_base, "api_key": API_KEY,
                    "default": {"generator": "pattern"}}],
    }))
    return path


def test_connect_sets_api_url_and_reports_change(market: SoftStoreMarketplace, config: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """connect POSTs /seller/profile, reads it back, and prints old -> new."""
    assert main(["softstore", "connect", "--config", str(config), "--store", "main", "--public-url", PUBLIC]) == 0
    assert market.seller_url == PUBLIC
    assert f"https://old.example/hook -> {PUBLIC}" in capsys.readouterr().out
    profile_posts = [r for r in market.requests if r.path.endswith("/seller/profile")]
    assert [r.json for r in profile_posts] == [{"api_url": PUBLIC}]


def test_connect_is_a_no_op_when_already_connected(market: SoftStoreMarketplace, config: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A second connect changes nothing and sends no update."""
    market.seller_url = PUBLIC
    assert main(["softstore", "connect", "--config", str(config), "--store", "main", "--public-url", PUBLIC]) == 0
    assert "unchanged" in capsys.readouterr().out
    assert not [r for r in market.requests if r.path.endswith("/seller/profile")]


def test_check_only_compares(market: SoftStoreMarketplace, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--check exits 1 on a difference and never updates the profile."""
    code = main(["softstore", "connect", "--config", str(config), "--store", "main", "--public-url", PUBLIC, "--check"])
    assert code == 1
    assert market.seller_url == "https://old.example/hook"
    assert "expected" in capsys.readouterr().out


def test_marketplace_validation_error_is_one_line(market: SoftStoreMarketplace, config: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """SoftStore's "Invalid API URL" is shown as one clear line, exit 1, nothing changed."""
    code = main(["softstore", "connect", "--config", str(config), "--store", "main", "--public-url", "not a url"])
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Invalid API URL" in err
    assert API_KEY not in err
    assert market.seller_url == "https://old.example/hook"


def test_unknown_store_is_a_config_error(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Naming a store that is not configured exits 2 with one line."""
    assert main(["softstore", "connect", "--config", str(config), "--store", "nope", "--public-url", PUBLIC]) == 2
    assert "no store named 'nope'" in capsys.readouterr().err


def test_check_config_shows_store_status(market: SoftStoreMarketplace, config: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """check-config prints the seller's name, moderation status and whether api_url points here."""
    market.seller_url = PUBLIC
    assert main(["check-config", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "moderation status" in out and "points at this daemon" in out and "NOT" not in out


def test_check_config_does_not_fail_when_marketplace_is_down(market: SoftStoreMarketplace, config: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """An unreachable marketplace is reported, and the configuration is still valid (exit 0)."""
    market.faults.down(True)
    assert main(["check-config", "--config", str(config)]) == 0
    assert "not reachable now" in capsys.readouterr().out


async def test_connect_then_orders_reach_the_daemon(make_stack: Any, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """End to end: connect points SoftStore at the daemon, --check agrees, and the next order is delivered."""
    import anyio

    from tests.support.stack import PRODUCT, STORE

    async with make_stack() as stack:
        stack.market.seller_url = None
        path = tmp_path / "stack.yaml"
        path.write_text(yaml.safe_dump({"database": {"url": stack.settings.database.url}, "stores": [
            {"name": STORE, "marketplace": "softstore", "api_url": stack.market.api_base, "api_key": stack.api_key,
             "default": {"generator": "pattern"}}]}))
        argv = ["softstore", "connect", "--config", str(path), "--store", STORE, "--public-url", stack.webhook_url]
        assert await anyio.to_thread.run_sync(main, argv) == 0
        assert await anyio.to_thread.run_sync(main, [*argv, "--check"]) == 0
        assert f"{stack.webhook_url} (matches)" in capsys.readouterr().out
        placed = await stack.market.place_order(PRODUCT)
        assert placed.webhook_status == 200
        await stack.drain()
        assert stack.market.accepted(placed.id_order) is not None
