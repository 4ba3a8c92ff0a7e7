"""The ``watchdog`` section: defaults, and each bad value refused with its key path and the expected form."""

from __future__ import annotations

from typing import Any

import pytest

from delivery_daemon.config import parse_settings
from delivery_daemon.errors import ConfigError


def test_defaults_run_every_five_minutes_over_a_day() -> None:
    """Without the section the watchdog is on: every 300 s, first run back 1 day, 1 h settle, 10 min grace."""
    watchdog = parse_settings({}).watchdog
    assert (watchdog.enabled, watchdog.interval, watchdog.lookback, watchdog.settle, watchdog.grace) == (
        True,
        300.0,
        86_400.0,
        3_600.0,
        600.0,
    )


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"interval": 5}, "watchdog.interval: the number 5 is too small; expected a number from 10 to 86400"),
        ({"interval": "often"}, "watchdog.interval: got text 'often'; expected a number from 10 to 86400"),
        ({"lookback": 0}, "watchdog.lookback:"),
        ({"lookback": 600, "settle": 3600}, "watchdog.settle: must not be longer than watchdog.lookback"),
        ({"settle": 60}, "watchdog.grace: must not be longer than watchdog.settle"),
        ({"every": 60}, "watchdog.every: unknown key"),
    ],
)
def test_bad_values_name_their_key(section: dict[str, Any], message: str) -> None:
    """A bad watchdog value is a ConfigError naming the key path and what is expected."""
    with pytest.raises(ConfigError) as caught:
        parse_settings({"watchdog": section})
    assert str(caught.value).startswith(message), str(caught.value)
