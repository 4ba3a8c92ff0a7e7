"""The shipped ``pattern`` generator: key shape, charset, prefix, option validation and uniqueness."""

from __future__ import annotations

import re

import pytest
from delivery_daemon_plugins.pattern import UNAMBIGUOUS, PatternGenerator, PatternOptions
from pydantic import ValidationError

from delivery_daemon.generator import OrderContext
from delivery_daemon.plugins import discover


def context(quantity: int) -> OrderContext:
    return OrderContext(store="s", marketplace="softstore", order_id="o", product_id="p", quantity=quantity)


def test_default_shape_and_charset() -> None:
    """Default keys look like XXXXX-XXXXX-XXXXX-XXXXX-XXXXX over the unambiguous charset."""
    result = PatternGenerator(PatternOptions()).generate(context(3))
    assert len(result.keys) == 3
    shape = re.compile(rf"^[{UNAMBIGUOUS}]{{5}}(-[{UNAMBIGUOUS}]{{5}}){{4}}$")
    assert all(shape.match(key) for key in result.keys), result.keys
    assert not set("0O1IL5S2Z8B") & set(UNAMBIGUOUS)


def test_custom_pattern_charset_prefix() -> None:
    """Non-X characters are copied, X drawn from the charset, and the prefix put in front."""
    options = PatternOptions(pattern="XXXX.XXXX", charset="ab", prefix="PRO-")
    [key] = PatternGenerator(options).generate(context(1)).keys
    assert re.fullmatch(r"PRO-[ab]{4}\.[ab]{4}", key)


def test_keys_are_distinct() -> None:
    """A large batch has no repeated key."""
    keys = PatternGenerator(PatternOptions()).generate(context(1000)).keys
    assert len(set(keys)) == 1000


@pytest.mark.parametrize(("options", "field"), [
    ({"pattern": "XXXXXXX"}, "pattern"),
    ({"pattern": ""}, "pattern"),
    ({"charset": "aab"}, "charset"),
    ({"charset": "a"}, "charset"),
    ({"colour": "red"}, "colour"),
])
def test_bad_options_refused(options: dict[str, str], field: str) -> None:
    """Guessable patterns, repeated or single-character charsets and unknown options are refused."""
    with pytest.raises(ValidationError) as caught:
        PatternOptions.model_validate(options)
    assert caught.value.errors()[0]["loc"] == (field,)


def test_registered_as_entry_point() -> None:
    """The installed package exposes ``pattern`` through the generators entry point group."""
    assert discover()["pattern"].plugin is PatternGenerator
