"""The marketplace types this build ships with are listed by name and imported only for a store that uses them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from delivery_daemon.compose import SHIPPED, default_marketplaces

ROOT = Path(__file__).resolve().parents[2]


def test_each_shipped_name_is_its_types_name() -> None:
    """Every listed name is the ``name`` of the type its module defines (the list cannot drift from the adapters)."""
    for shipped in SHIPPED:
        assert shipped.load().name == shipped.name
    assert len({shipped.name for shipped in default_marketplaces()}) == len(SHIPPED) == 13


def test_a_softstore_store_imports_no_other_adapter() -> None:
    """Building a SoftStore store imports the softstore adapter module and no other marketplace's module."""
    code = """
import sys
from delivery_daemon.clock import ManualClock
from delivery_daemon.compose import default_marketplaces
from delivery_daemon.config import parse_settings
from delivery_daemon.pipeline.stores import build_stores
settings = parse_settings({"stores": [{"name": "s", "marketplace": "softstore", "api_url": "http://127.0.0.1:9/api",
                                       "api_key": "k" * 40}]})
build_stores(settings, default_marketplaces(), {}, ManualClock())
print(" ".join(sorted(m.rsplit(".", 1)[1] for m in sys.modules if m.startswith("delivery_daemon.marketplaces."))))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = set(done.stdout.split())
    assert "softstore" in loaded
    assert not loaded & {shipped.module for shipped in SHIPPED if shipped.name != "softstore"}, loaded
