"""The example plugin, tested with the helper delivery-daemon ships for plugin authors."""

import pytest
from delivery_daemon_serial import SerialGenerator

from delivery_daemon.errors import ConfigError
from delivery_daemon.generators.discovery import discover
from delivery_daemon.testing import run_generator


def test_three_keys_with_code():
    """quantity 3 gives three distinct keys starting with the product code."""
    result = run_generator(SerialGenerator, {"code": "APP"}, quantity=3)
    assert len(set(result.keys)) == 3 and all(k.startswith("APP-") for k in result.keys)


def test_bad_code_names_the_option():
    """An invalid code is a config error at the option's key path."""
    with pytest.raises(ConfigError, match=r"options\.code"):
        run_generator(SerialGenerator, {"code": "lower"})


def test_installed_entry_point_is_discovered():
    """Once installed, the daemon finds the plugin through its entry point."""
    info = discover()["serial"]
    assert info.plugin is SerialGenerator and info.version == "1.0.0"
