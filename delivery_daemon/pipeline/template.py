"""Delivery text templates: ``str.format`` fields from a fixed list, checked when the config is loaded.

Fields: ``{keys}`` (comma-separated), ``{keys_lines}`` (one per line), ``{order_id}``, ``{product_id}``,
``{quantity}``, ``{download}`` (empty when none), ``{text}`` (the generator's own text, empty when none).
Attribute access, indexing and conversions are refused, so a template can never reach into Python objects.
"""

from __future__ import annotations

import string

from delivery_daemon.order import Content

FIELDS = ("keys", "keys_lines", "order_id", "product_id", "quantity", "download", "text")


def check_template(template: str) -> None:
    """Raise ValueError naming the problem if ``template`` uses anything but the documented fields."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"invalid template: {exc}") from None
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in FIELDS:
            raise ValueError(f"unknown field {{{name}}}; use one of " + ", ".join(f"{{{f}}}" for f in FIELDS))
        if spec or conversion:
            raise ValueError(f"field {{{name}}} takes no format spec or conversion")


def render(
    template: str,
    *,
    keys: tuple[str, ...],
    order_id: str,
    product_id: str,
    quantity: int,
    download: str | None,
    text: str | None,
) -> Content:
    """The delivered content: the template filled in, with the keys kept beside it for the record."""
    rendered = template.format(
        keys=", ".join(keys),
        keys_lines="\n".join(keys),
        order_id=order_id,
        product_id=product_id,
        quantity=quantity,
        download=download or "",
        text=text or "",
    )
    return Content(text=rendered, download=download, keys=keys)
