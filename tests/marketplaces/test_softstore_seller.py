"""`delivery-daemon softstore connect` and the store status in `check-config`, against the reference marketplace;
`softstore test-webhook` against a daemon on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from delivery_daemon.cli import main
from delivery_daemon.compose import create_app, default_marketplaces
from delivery_daemon.config import load_settings
from delivery_daemon.generators.discovery import discover
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
    path.write_text(
        yaml.safe_dump(
            {
                "database": {"url": f"sqlite:///{tmp_path / 'd.db'}"},
                "stores": [
                    {
                        "name": "main",
                        "marketplace": "softstore",
                        "api_url": market.api_base,
                        "api_key": API_KEY,
                        "default": {"generator": "pattern"},
                    }
                ],
            }
        )
    )
    return path


def test_connect_sets_api_url_and_reports_change(
    market: SoftStoreMarketplace, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """connect POSTs /seller/profile, reads it back, and prints old -> new."""
    assert main(["softstore", "connect", "--config", str(config), "--store", "main", "--public-url", PUBLIC]) == 0
    assert market.seller_url == PUBLIC
    assert f"https://old.example/hook -> {PUBLIC}" in capsys.readouterr().out
    profile_posts = [r for r in market.requests if r.path.endswith("/seller/profile")]
    assert [r.json for r in profile_posts] == [{"api_url": PUBLIC}]


def test_connect_is_a_no_op_when_already_connected(
    market: SoftStoreMarketplace, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
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


def test_marketplace_validation_error_is_one_line(
    market: SoftStoreMarketplace, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
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


def test_check_config_shows_store_status(
    market: SoftStoreMarketplace, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """check-config prints the seller's name, moderation status and whether api_url points here."""
    market.seller_url = PUBLIC
    assert main(["check-config", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "moderation status" in out and "points at this daemon" in out and "NOT" not in out


def test_check_config_does_not_fail_when_marketplace_is_down(
    market: SoftStoreMarketplace, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unreachable marketplace is reported, and the configuration is still valid (exit 0)."""
    market.faults.down(True)
    assert main(["check-config", "--config", str(config)]) == 0
    assert "not reachable now" in capsys.readouterr().out


async def test_connect_then_orders_reach_the_daemon(
    make_stack: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """End to end: connect points SoftStore at the daemon, --check agrees, and the next order is delivered."""
    import anyio

    from tests.support.stack import PRODUCT, STORE

    async with make_stack() as stack:
        stack.market.seller_url = None
        path = tmp_path / "stack.yaml"
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
                            "default": {"generator": "pattern"},
                        }
                    ],
                }
            )
        )
        argv = ["softstore", "connect", "--config", str(path), "--store", STORE, "--public-url", stack.webhook_url]
        assert await anyio.to_thread.run_sync(main, argv) == 0
        assert await anyio.to_thread.run_sync(main, [*argv, "--check"]) == 0
        assert f"{stack.webhook_url} (matches)" in capsys.readouterr().out
        placed = await stack.market.place_order(PRODUCT)
        assert placed.webhook_status == 200
        await stack.drain()
        assert stack.market.accepted(placed.id_order) is not None


# -- softstore test-webhook: a signed, unpaid test order against a daemon on 127.0.0.1 ----------------------------


@pytest.fixture
def local_daemon(config: Path) -> Iterator[str]:
    """The daemon's receiver for ``config``, serving on 127.0.0.1 (no worker: nothing should reach it anyway)."""

    app = create_app(load_settings(config), marketplaces=default_marketplaces(), plugins=discover(), start_worker=False)
    with serve_in_thread(app) as server:
        yield server.url


def _jobs(config: Path) -> int:
    import sqlite3

    database = yaml.safe_load(config.read_text())["database"]["url"].removeprefix("sqlite:///")
    with sqlite3.connect(database) as conn:
        return int(conn.execute("SELECT count(*) FROM jobs").fetchone()[0])


def _other_key(config: Path, tmp_path: Path, **store: Any) -> Path:
    document = yaml.safe_load(config.read_text())
    document["stores"][0].update(store)
    path = tmp_path / "other.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_test_webhook_reaches_the_daemon_and_stores_nothing(
    config: Path, local_daemon: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The signed test order is verified and ignored (200 "ignored"): exit 0, one OK line, no job."""
    url = f"{local_daemon}/webhooks/main"
    assert main(["softstore", "test-webhook", "--config", str(config), "--store", "main", "--public-url", url]) == 0
    out = capsys.readouterr().out  # the daemon's own log lines (same process) are in it too
    assert f"\n{url}: OK — reached the daemon, signature verified for store main, nothing stored\n" in out
    assert "webhook.ignored" in out
    assert _jobs(config) == 0


@pytest.mark.parametrize(
    ("store", "path", "reason"),
    [
        (
            {"api_key": "another-seller-key-0123"},
            "main",
            '403 {"error":"invalid signature"} — the signature was '
            "refused: the daemon there has another api_key for this store",
        ),
        ({}, "shop", "404"),
        ({"api_url": "https://api.other.example/api/v1"}, "main", "422"),
    ],
)
def test_test_webhook_says_why_it_failed(
    config: Path,
    local_daemon: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    store: dict[str, str],
    path: str,
    reason: str,
) -> None:
    """Another key, another store name or another api_url than the daemon's: exit 1 and the reason in one line."""
    url = f"{local_daemon}/webhooks/{path}"
    other = _other_key(config, tmp_path, **store)
    assert main(["softstore", "test-webhook", "--config", str(other), "--store", "main", "--public-url", url]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{url}: {reason}") and err.count("\n") == 1, err


def test_test_webhook_reports_an_unreachable_url(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = "http://127.0.0.1:9/webhooks/main"
    assert (
        main(
            [
                "softstore",
                "test-webhook",
                "--config",
                str(config),
                "--store",
                "main",
                "--public-url",
                url,
                "--timeout",
                "5",
            ]
        )
        == 1
    )
    assert capsys.readouterr().err.startswith(f"{url}: not reached: ConnectError")
