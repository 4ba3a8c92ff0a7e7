"""``--config FILE`` or ``DELIVERY_DAEMON_CONFIG``: every command that reads the configuration takes both, the same
way; ``--config`` wins; a command that needs one and has neither says so in one line (exit 2)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from delivery_daemon.cli import build_parser, main
from delivery_daemon.cli.options import CONFIG_ENV
from delivery_daemon.storage.engine import create_db_engine, create_schema


def config_options(parser: argparse.ArgumentParser, path: str = "") -> dict[str, argparse.Action]:
    """Every sub-command's ``--config`` action, by command path (``orders list``)."""
    found: dict[str, argparse.Action] = {}
    for action in parser._actions:
        if "--config" in action.option_strings:
            found[path] = action
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found.update(config_options(child, f"{path} {name}".strip()))
    return found


def test_every_config_option_defaults_to_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each ``--config`` in the whole parser is the shared option: it defaults to the variable's value."""
    monkeypatch.setenv(CONFIG_ENV, "/etc/delivery-daemon/from-env.yaml")
    options = config_options(build_parser())
    assert {
        "serve",
        "check-config",
        "plugins list",
        "stock import",
        "stock status",
        "softstore connect",
        "softstore sync-stock",
        "orders list",
        "orders show",
        "orders retry",
        "orders redeliver",
        "orders cancel",
        "db backup",
        "db purge",
        "db reencrypt",
        "db migrate",
    } <= options.keys()
    for command, action in options.items():
        assert action.default == "/etc/delivery-daemon/from-env.yaml", command
        assert CONFIG_ENV in (action.help or ""), command


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A configuration whose SQLite database exists, with a plugins directory holding one plugin."""
    database = tmp_path / "d.db"
    create_schema(create_db_engine(f"sqlite:///{database}"))
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "envplugin.py").write_text(
        "from pydantic import BaseModel\n\n"
        "class EnvPlugin:\n    name = 'envplugin'\n    Options = BaseModel\n\n"
        "    def __init__(self, options, resources):\n        pass\n\n"
        "    def generate(self, order):\n        raise NotImplementedError\n\n"
        "GENERATORS = [EnvPlugin]\n"
    )
    path = tmp_path / "config.yaml"
    path.write_text(f"database: {{url: 'sqlite:///{database}'}}\nplugins: {{directory: '{plugins}'}}\n")
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_commands_read_the_config_from_the_variable(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With only ``DELIVERY_DAEMON_CONFIG`` set, check-config, orders list, db backup and plugins list all read it."""
    monkeypatch.setenv(CONFIG_ENV, str(config))
    code, out, err = run(capsys, "check-config")
    assert code == 0 and out.startswith(f"configuration OK: {config}"), err
    code, out, err = run(capsys, "orders", "list", "--json")
    assert (code, out.strip()) == (0, "[]"), err
    code, out, err = run(capsys, "db", "backup", str(tmp_path / "copy.db"))
    assert code == 0 and out.startswith("backup written:"), err
    code, out, err = run(capsys, "plugins", "list")
    assert code == 0 and "envplugin" in out, err


def test_config_option_wins_over_the_variable(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(CONFIG_ENV, "/nonexistent/config.yaml")
    code, out, err = run(capsys, "check-config", "--config", str(config))
    assert code == 0 and out.startswith(f"configuration OK: {config}"), err


@pytest.mark.parametrize("argv", [["serve"], ["check-config"], ["stock", "status"], ["db", "migrate", "--to", "x"]])
def test_neither_is_one_line_naming_both(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err == f"delivery-daemon: error: say which configuration file: --config FILE or {CONFIG_ENV}=FILE\n"
