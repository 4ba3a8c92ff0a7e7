"""Plugins load lazily: an entry point is imported only when a product names it, and a broken plugin that no product
uses neither stops ``check-config`` nor ``serve`` (a real process); ``plugins list`` shows it broken."""

from __future__ import annotations

import asyncio
import importlib
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from delivery_daemon.cli import main
from delivery_daemon.clock import ManualClock
from delivery_daemon.compose import default_marketplaces
from delivery_daemon.config import load_settings
from delivery_daemon.errors import PluginError
from delivery_daemon.generators.discovery import BrokenPlugin, discover
from delivery_daemon.pipeline.stores import build_stores
from tests.support.serve_process import serve_once

BROKEN_FILE = "import keylib_that_is_not_installed\n"
LOADS = "a plugin that loads (delivery-daemon plugins list shows why it does not), or another generator"


@pytest.fixture
def broken_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An installed distribution whose ``probe`` entry point's module fails to import, on sys.path (and
    PYTHONPATH, for child processes)."""
    site = tmp_path / "site"
    dist = site / "lazy_probe-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: lazy-probe\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[delivery_daemon.generators]\nprobe = lazy_probe_mod:Probe\n")
    # Each import attempt leaves a line in imports.log, then fails.
    (site / "lazy_probe_mod.py").write_text(
        f"open({str(site / 'imports.log')!r}, 'a').write('import\\n')\nraise RuntimeError('probe imported')\n"
    )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
    importlib.invalidate_caches()
    return site


def _config(tmp_path: Path, generator: str, directory: Path | None = None) -> Path:
    document: dict[str, Any] = {
        "database": {"url": f"sqlite:///{tmp_path / 'lazy.db'}"},
        "server": {"host": "127.0.0.1", "port": 0},
        "stores": [
            {
                "name": "main",
                "marketplace": "softstore",
                "api_url": "https://api.example.com/api/v1",
                "api_key": "k" * 20,
                "products": {"p1": {"generator": generator}},
            }
        ],
    }
    if directory is not None:
        document["plugins"] = {"directory": str(directory)}
    path = tmp_path / f"config-{generator}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_entry_points_are_imported_only_when_named(
    broken_entry_point: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Discovery lists the entry point without importing it, and building the stores as ``serve`` does imports only
    the generators products name; a product naming it is the first import, and the failure is one line at that
    product's key path. ``check-config`` imports every plugin, to warn about a broken one nobody uses."""
    imports = broken_entry_point / "imports.log"
    plugins = discover()
    assert "probe" in plugins and not imports.exists()
    settings = load_settings(_config(tmp_path, "pattern"))
    asyncio.run(_close(build_stores(settings, default_marketplaces(), plugins, ManualClock())))
    assert not imports.exists()
    assert main(["check-config", "--config", str(_config(tmp_path, "pattern"))]) == 0
    assert (
        "  warning: unused plugin 'probe' is broken: generator plugin 'probe' (lazy_probe_mod:Probe) failed to "
        "load: RuntimeError: probe imported\n" in capsys.readouterr().out
    )
    assert main(["check-config", "--config", str(_config(tmp_path, "probe"))]) == 2
    assert capsys.readouterr().err == (
        "delivery-daemon: error: stores[0].products.p1.generator: generator plugin 'probe' (lazy_probe_mod:Probe) "
        f"failed to load: RuntimeError: probe imported; expected {LOADS}\n"
    )
    with pytest.raises(PluginError, match="probe imported"):
        plugins["probe"]
    with pytest.raises(PluginError, match="probe imported"):  # the failure is remembered, not retried
        plugins["probe"]
    listed = {entry.name: entry for entry in plugins.listing()}
    assert isinstance(listed["probe"], BrokenPlugin) and listed["probe"].version == "1.0"
    assert listed["probe"].source == "entry point lazy_probe_mod:Probe (lazy-probe)"
    assert not isinstance(listed["pattern"], BrokenPlugin)


def test_plugins_list_shows_a_broken_entry_point(broken_entry_point: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "list"]) == 1
    out = capsys.readouterr().out
    assert (
        "probe  1.0  (entry point lazy_probe_mod:Probe (lazy-probe))  BROKEN\n"
        "    generator plugin 'probe' (lazy_probe_mod:Probe) failed to load: RuntimeError: probe imported\n"
    ) in out
    assert "\npattern  0.1.0  (entry point delivery_daemon_plugins.pattern:PatternGenerator" in out


def test_unknown_generator_names_the_plugin_files_that_did_not_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A product naming a generator no plugin has, while a plugin file failed to load, is told about that file
    (the generator may be in it, under another name than the file's)."""
    directory = tmp_path / "plugins"
    directory.mkdir()
    (directory / "keylib.py").write_text(BROKEN_FILE)
    assert main(["check-config", "--config", str(_config(tmp_path, "serial", directory))]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "delivery-daemon: error: stores[0].products.p1.generator: unknown generator 'serial' "
        f"(plugin file {directory / 'keylib.py'} failed to load: ModuleNotFoundError: "
    ), err


def test_serve_starts_with_an_unused_broken_plugin_and_refuses_a_used_one(tmp_path: Path) -> None:
    """A real ``serve``: a broken single-file plugin no product uses is ignored (the daemon starts, stops with 0);
    once a product names it, the start stops with exit 2 and one line saying which product and why."""
    directory = tmp_path / "plugins"
    directory.mkdir()
    (directory / "keylib.py").write_text(BROKEN_FILE)
    code, events, err = serve_once(_config(tmp_path, "pattern", directory), expect_start=True)
    assert code == 0, err
    assert any(e["event"] == "daemon.started" for e in events) and events[-1]["event"] == "daemon.stopped"
    code, events, err = serve_once(_config(tmp_path, "keylib", directory), expect_start=False)
    assert code == 2 and not any(e["event"] == "daemon.started" for e in events)
    assert err == (
        f"delivery-daemon: error: stores[0].products.p1.generator: plugin file {directory / 'keylib.py'} "
        "failed to load: ModuleNotFoundError: No module named 'keylib_that_is_not_installed'; expected "
        f"{LOADS}\n"
    )


async def _close(stores: dict[str, Any]) -> None:
    for store in stores.values():
        await store.aclose()


def test_a_missing_plugins_directory_names_its_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The one discovery failure left (the configured directory is missing) stops the start at its key."""
    assert main(["check-config", "--config", str(_config(tmp_path, "pattern", tmp_path / "missing"))]) == 2
    assert capsys.readouterr().err == (
        f"delivery-daemon: error: plugins.directory: plugins directory {tmp_path / 'missing'} does not exist; "
        "expected an existing directory of single-file plugins (*.py), or no plugins.directory\n"
    )
