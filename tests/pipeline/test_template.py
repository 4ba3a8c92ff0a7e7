"""Delivery text templates: only the documented fields, checked up front, rendered predictably."""

from __future__ import annotations

import pytest

from delivery_daemon.pipeline.template import FIELDS, check_template, render


def test_render_all_fields() -> None:
    """Every documented field renders; keys come comma-joined and one per line."""
    template = " | ".join(f"{{{name}}}" for name in FIELDS)
    content = render(
        template,
        keys=("A-1", "B-2"),
        order_id="o9",
        product_id="p1",
        quantity=2,
        download="https://cdn.example/f.zip",
        text="hello",
    )
    assert content.text == "A-1, B-2 | A-1\nB-2 | o9 | p1 | 2 | https://cdn.example/f.zip | hello"
    assert content.keys == ("A-1", "B-2")
    assert content.download == "https://cdn.example/f.zip"


def test_render_missing_optionals_are_empty() -> None:
    """No download and no generator text render as empty strings, never ``None``."""
    content = render(
        "[{download}][{text}]", keys=("K",), order_id="o", product_id="p", quantity=1, download=None, text=None
    )
    assert content.text == "[][]"
    assert content.download is None


def test_literal_braces() -> None:
    """Doubled braces stay literal braces."""
    assert (
        render("{{x}} {keys}", keys=("K",), order_id="o", product_id="p", quantity=1, download=None, text=None).text
        == "{x} K"
    )


def test_content_json_round_trip_is_stable() -> None:
    """Stored content reads back equal and serialises to the same bytes (what every retry sends)."""
    from delivery_daemon.order import Content

    content = render(
        "{keys_lines}", keys=("é-1", "K-2"), order_id="o", product_id="p", quantity=2, download=None, text=None
    )
    raw = content.to_json()
    assert Content.from_json(raw) == content
    assert Content.from_json(raw).to_json() == raw


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("{secret}", "unknown field {secret}"),
        ("{order_id.__class__}", "unknown field"),
        ("{keys[0]}", "unknown field"),
        ("{order_id!r}", "takes no format spec or conversion"),
        ("{quantity:>10}", "takes no format spec or conversion"),
        ("{0}", "unknown field {0}"),
        ("{}", "unknown field {}"),
        ("{keys", "invalid template"),
    ],
)
def test_check_template_refuses(template: str, problem: str) -> None:
    """Unknown fields, attribute/index access, conversions, positional fields and bad syntax are refused."""
    with pytest.raises(ValueError, match=problem.replace("{", r"\{").replace("}", r"\}").replace("[", r"\[")):
        check_template(template)


def test_check_template_accepts_documented() -> None:
    """A template using only documented fields passes."""
    check_template("Order {order_id}: {quantity} x {product_id}\n{keys_lines}\n{download}{text}{keys}")
