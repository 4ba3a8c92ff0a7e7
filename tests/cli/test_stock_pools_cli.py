"""``stock import`` and ``stock status`` per shared pool, beside the per-product form they keep."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from delivery_daemon.cli import main

WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def _config(tmp_path: Path) -> str:
    channel = {"channel": "webhook", "webhook": {"url": "http://127.0.0.1:9/hook", "secret": WHSEC}}
    store: dict[str, Any] = {"webhook_secret": "s" * 16, "delivery": channel}
    document = {
        "database": {"url": f"sqlite:///{tmp_path / 'd.db'}"},
        "pools": {"shared": {}, "unused": {}},
        "stores": [
            {
                "name": "sx",
                "marketplace": "sellix",
                **store,
                "products": {"serial": {"generator": "stock", "pool": "shared"}, "own": {"generator": "stock"}},
            },
            {"name": "sh", "marketplace": "shoppy", **store, "default": {"generator": "stock", "pool": "shared"}},
            {"name": "other", "marketplace": "shoppy", **store, "default": {"generator": "pattern"}},
        ],
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(document))
    return str(path)


def _import(config: str, keys: Path, *target: str) -> int:
    return main(["stock", "import", "--config", config, *target, "--no-sync", str(keys)])


def test_status_lists_products_then_pools(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Own pools keep their table; each configured pool gets a line with its counts and who draws on it, filtered
    by --store (the pools it draws on) and --pool."""
    config = _config(tmp_path)
    keys = tmp_path / "k.txt"
    keys.write_text("A\nB\nC\n")
    assert _import(config, keys, "--store", "sx", "--product", "own") == 0
    assert "imported 3 keys for sx/own" in capsys.readouterr().out
    keys.write_text("A\nB\nD\nE\n")  # the same keys may be in two pools: each pool de-duplicates its own
    assert _import(config, keys, "--pool", "shared") == 0
    assert "imported 4 keys for pool shared, skipped 0 duplicates" in capsys.readouterr().out
    assert _import(config, keys, "--store", "sh", "--product", "anything") == 0
    assert "imported 0 keys for pool shared (drawn on by sh/anything), skipped 4" in capsys.readouterr().out

    assert main(["stock", "status", "--config", config]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert rows[1] == ["sx", "own", "3", "0", "0"]
    assert rows[3][0] == "pool" and rows[4] == ["shared", "4", "0", "0", "sx/serial,", "sh/(default)"]
    assert rows[5][:4] == ["unused", "0", "0", "0"]

    assert main(["stock", "status", "--config", config, "--store", "sh"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == ["pool", "shared"]
    assert main(["stock", "status", "--config", config, "--store", "other"]) == 0
    assert capsys.readouterr().out.strip() == "no stock imported"
    assert main(["stock", "status", "--config", config, "--pool", "unused"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == ["pool", "unused"]


def test_move_puts_a_products_keys_into_the_pool(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``stock move`` empties the product's own pool into the shared one; an unknown pool exits 2."""
    config = _config(tmp_path)
    keys = tmp_path / "k.txt"
    keys.write_text("A\nB\n")
    assert _import(config, keys, "--store", "sx", "--product", "own") == 0
    argv = ["stock", "move", "--config", config, "--store", "sx", "--product", "own", "--no-sync"]
    assert main([*argv, "--pool", "nope"]) == 2
    assert "--pool: no pool named 'nope'" in capsys.readouterr().err
    assert main([*argv, "--pool", "shared"]) == 0
    out = capsys.readouterr().out
    assert "moved 2 keys from sx/own to pool shared, dropped 0 already in the pool; 0 waiting orders requeued" in out
    assert main(["stock", "status", "--config", config, "--pool", "shared"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:3] == ["shared", "2", "0"]
