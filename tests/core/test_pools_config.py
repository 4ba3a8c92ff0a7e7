"""The ``pools:`` section: products of any store name a pool; an unknown pool, a bad pool name or a pool on a
generator that takes no stock is a one-line configuration error with the key path (``check-config`` exits 2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from delivery_daemon.cli import main
from delivery_daemon.config import parse_settings

WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
STOCK = {"generator": "stock", "pool": "shared"}


def document(pools: Any, sellix: dict[str, Any], shoppy: dict[str, Any] | None = None) -> dict[str, Any]:
    """Two stores on two marketplaces with the given products (delivering to a loopback hook)."""
    channel = {"channel": "webhook", "webhook": {"url": "http://127.0.0.1:9/hook", "secret": WHSEC}}
    stores = [
        {"name": "sx", "marketplace": "sellix", "webhook_secret": "s" * 16, "delivery": channel, "products": sellix},
        {"name": "sh", "marketplace": "shoppy", "webhook_secret": "s" * 16, "delivery": channel, **(shoppy or {})},
    ]
    return {
        "database": {"url": "sqlite:///unused.db"},
        "security": {"allowed_networks": ["127.0.0.0/8"]},
        "pools": pools,
        "stores": stores,
    }


def check(tmp_path: Path, doc: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(doc))
    code = main(["check-config", "--config", str(path)])
    return code, capsys.readouterr().err


def test_products_of_two_stores_name_one_pool() -> None:
    """Both stores' products (one a store's default) resolve to the pool, with its settings."""
    settings = parse_settings(
        document({"shared": {"low_stock_threshold": 3}}, {"serial": STOCK}, {"default": STOCK}), environ={}
    )
    assert settings.pools["shared"].low_stock_threshold == 3
    assert settings.pool_products("shared") == [("sx", "serial"), ("sh", None)]
    assert (settings.pool_of("sx", "serial"), settings.pool_of("sh", "anything"), settings.pool_of("sx", "x")) == (
        "shared",
        "shared",
        None,
    )


@pytest.mark.parametrize(
    ("pools", "sellix", "shoppy", "path", "words"),
    [
        ({}, {"serial": STOCK}, None, "stores[0].products.serial.pool", "unknown pool 'shared'"),
        ({"other": {}}, {}, {"default": STOCK}, "stores[1].default.pool", "unknown pool 'shared' (pools: other)"),
        ({"bad name": {}}, {}, None, "pools.bad name", "bad pool name"),
        ({"shared": {"low_stock_threshold": -1}}, {}, None, "pools.shared.low_stock_threshold", "too small"),
        ({"shared": {"size": 3}}, {}, None, "pools.shared.size", "unknown key"),
        (
            {"shared": {}},
            {"serial": {"generator": "pattern", "pool": "shared"}},
            None,
            "stores[0].products.serial.pool",
            "does not take keys from a stock pool",
        ),
        (
            {"shared": {}},
            {"serial": {**STOCK, "options": {"low_stock_threshold": 2}}},
            None,
            "stores[0].products.serial.generator",
            "pools.shared.low_stock_threshold",
        ),
    ],
)
def test_bad_pool_configuration_exits_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    pools: Any,
    sellix: dict[str, Any],
    shoppy: dict[str, Any] | None,
    path: str,
    words: str,
) -> None:
    """check-config refuses the pool mistake with one line naming the key path, and exits 2."""
    code, err = check(tmp_path, document(pools, sellix, shoppy), capsys)
    assert code == 2
    assert err.startswith(f"delivery-daemon: error: {path}: ") and words in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_stock_commands_refuse_an_unknown_pool(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``stock import --pool`` and ``stock status --pool`` with a pool not configured exit 2 naming --pool."""
    path = tmp_path / "c.yaml"
    doc = document({"shared": {}}, {"serial": STOCK})
    doc["database"]["url"] = f"sqlite:///{tmp_path / 'd.db'}"
    path.write_text(yaml.safe_dump(doc))
    keys = tmp_path / "k.txt"
    keys.write_text("K\n")
    assert main(["stock", "import", "--config", str(path), "--pool", "nope", str(keys)]) == 2
    assert "--pool: no pool named 'nope'" in capsys.readouterr().err
    assert main(["stock", "status", "--config", str(path), "--pool", "nope"]) == 2
    assert "--pool: no pool named 'nope'" in capsys.readouterr().err
    argv = ["stock", "import", "--config", str(path), "--pool", "shared", "--store", "sx", "--product", "p", str(keys)]
    assert main(argv) == 2
    assert "either --pool or --store" in capsys.readouterr().err
    assert main(["stock", "import", "--config", str(path), str(keys)]) == 2
    assert "--store: give --store with --product, or --pool" in capsys.readouterr().err
