"""The shipped ``pattern`` generator: key shape, charset, prefix, option validation and uniqueness."""

from __future__ import annotations

import inspect
import re

import pytest
from delivery_daemon_plugins.pattern import UNAMBIGUOUS, PatternGenerator, PatternOptions, draw
from pydantic import ValidationError

from delivery_daemon.generators.discovery import discover
from delivery_daemon.testing import run_generator


def test_default_shape_and_charset() -> None:
    """Default keys look like XXXXX-XXXXX-XXXXX-XXXXX-XXXXX over the unambiguous charset."""
    result = run_generator(PatternGenerator, {}, quantity=3)
    assert len(result.keys) == 3
    shape = re.compile(rf"^[{UNAMBIGUOUS}]{{5}}(-[{UNAMBIGUOUS}]{{5}}){{4}}$")
    assert all(shape.match(key) for key in result.keys), result.keys
    assert not set("0O1IL5S2Z8B") & set(UNAMBIGUOUS)


def test_custom_pattern_charset_prefix() -> None:
    """Non-X characters are copied, X drawn from the charset, and the prefix put in front."""
    options = {"pattern": "XXXX.XXXX", "charset": "ab", "prefix": "PRO-"}
    [key] = run_generator(PatternGenerator, options).keys
    assert re.fullmatch(r"PRO-[ab]{4}\.[ab]{4}", key)


def test_keys_are_distinct() -> None:
    """A large batch has no repeated key."""
    keys = run_generator(PatternGenerator, {}, quantity=1000).keys
    assert len(set(keys)) == 1000


def test_draw_is_uniform_over_a_charset_that_does_not_divide_256() -> None:
    """Every symbol of a 200-symbol charset is drawn equally often: bytes past 200 are rejected, not folded by
    ``% 200`` (which would draw the first 56 symbols twice as often)."""
    charset = "".join(chr(0x100 + i) for i in range(200))
    drawn = draw(charset, 200_000)
    assert len(drawn) == 200_000 and set(drawn) <= set(charset)
    counts = [drawn.count(ch) for ch in charset]
    first, rest = sum(counts[:56]) / 56, sum(counts[56:]) / 144
    assert 0.9 < first / rest < 1.1  # folded: ~2.0


def test_generate_runs_on_the_event_loop() -> None:
    """``generate`` is async: a key costs microseconds, less than the thread hop a sync generator gets."""
    assert inspect.iscoroutinefunction(PatternGenerator.generate)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"pattern": "XXXXXXX"}, "pattern"),
        ({"pattern": ""}, "pattern"),
        ({"charset": "aab"}, "charset"),
        ({"charset": "a"}, "charset"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_options_refused(options: dict[str, str], field: str) -> None:
    """Guessable patterns, repeated or single-character charsets and unknown options are refused."""
    with pytest.raises(ValidationError) as caught:
        PatternOptions.model_validate(options)
    assert caught.value.errors()[0]["loc"] == (field,)


def test_registered_as_entry_point() -> None:
    """The installed package exposes ``pattern`` through the generators entry point group."""
    assert discover()["pattern"].plugin is PatternGenerator
