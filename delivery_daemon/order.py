"""The one internal shape of an order, whatever marketplace it came from, and the rule every order must pass
before it is committed (:func:`check_order`)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import httpx

from delivery_daemon.errors import WebhookRejected

MAX_QUANTITY = 1000
"""An order for more units than this is refused: it is far more likely an error than a purchase."""


@dataclass(frozen=True)
class IncomingOrder:
    """A webhook that passed its signature check, normalised by the marketplace adapter.

    ``payload`` keeps what the adapter needs later to verify and deliver (e.g. SoftStore's ``delivery_url`` and
    ``token``). Nothing in it except what the signature covers is trusted.
    """

    store: str
    marketplace: str
    order_id: str
    product_id: str
    payload: dict[str, Any] = field(default_factory=dict)
    event_id: str | None = None
    """The marketplace's id for this delivery of the event, when it has one: resends of it are answered as
    duplicates (see :mod:`delivery_daemon.storage.events`). Not stored in the job."""
    buyer_email: str | None = None
    """The buyer's email as the webhook states it, when its signature covers one (the adapter keeps it in
    ``payload`` too): checked before the 2xx when the store delivers by email (:mod:`delivery_daemon.recipient`)."""
    held: str | None = None
    """Set by the receiver, not by adapters: why the order is stored ``held`` instead of ``queued``."""

    def payload_json(self) -> str:
        return json.dumps(self.payload, separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True)
class OrderItem:
    """One line of a cart that is a configured digital product: its generator runs for ``quantity`` units."""

    product_id: str
    quantity: int


@dataclass(frozen=True)
class MarketplaceOrder:
    """What the marketplace's own API says about an order (the only source the quantity is taken from).

    ``items`` is empty for the usual one-product order (``quantity`` units of ``product_id``). An adapter whose
    marketplace sells carts (Virtual Stores) lists the cart's digital lines there instead: each runs its own
    product's generator and the buyer gets one delivery with all their keys; ``quantity`` is then the sum of the
    items' quantities."""

    order_id: str
    product_id: str
    paid: bool
    status: str
    quantity: int
    buyer_email: str | None = None
    items: tuple[OrderItem, ...] = ()


@dataclass(frozen=True)
class Content:
    """What is delivered for an order: stored before the first attempt, re-sent byte for byte on every retry."""

    text: str
    download: str | None
    keys: tuple[str, ...]

    def to_json(self) -> str:
        return json.dumps(
            {"text": self.text, "download": self.download, "keys": list(self.keys)}, separators=(",", ":")
        )

    @classmethod
    def from_json(cls, raw: str) -> Content:
        data = json.loads(raw)
        return cls(text=data["text"], download=data.get("download"), keys=tuple(data.get("keys", ())))


LIMITS: dict[str, int] = {
    "store": 64,
    "marketplace": 32,
    "order_id": 128,
    "product_id": 128,
    "buyer_email": 320,
    "event_id": 255,
}
"""The longest value each of these order fields may hold; the database's columns are this long
(:mod:`delivery_daemon.storage.models` sizes them from here, and PostgreSQL enforces it)."""
MAX_URL = 2048


def unusable(text: str) -> str | None:
    """Why ``text`` cannot be stored and used as it is (a NUL, which PostgreSQL refuses in text; a lone UTF-16
    surrogate, which no database can encode), or None when it can."""
    if "\x00" in text:
        return "a NUL character"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "a lone UTF-16 surrogate"
    return None


def checked_text(value: str, name: str, limit: int | None = None) -> str:
    """``value`` if it can be stored in the field ``name`` (see :func:`unusable`, at most ``limit`` characters),
    else WebhookRejected 422 naming the field."""
    problem = unusable(value)
    if problem is not None:
        raise WebhookRejected(422, f"field {name} contains {problem}")
    if limit is not None and len(value) > limit:
        raise WebhookRejected(422, f"field {name} is longer than {limit} characters")
    return value


_PLAIN_URL = re.compile(r"https?://[A-Za-z0-9.-]+(?::[0-9]{0,5})?(?:[/?#][!-~]*)?")
"""An http(s) URL with a plain host and printable ASCII after it: httpx parses it (a property test checks this),
so it is accepted without parsing (profile: parsing each webhook's ``delivery_url`` was ~5 % of the receiver's
CPU, see :func:`~delivery_daemon.marketplaces.base.same_origin`)."""


def usable_url(url: str) -> bool:
    """True when ``url`` is an absolute http(s) URL with a host that httpx parses (it will be requested)."""
    if _PLAIN_URL.fullmatch(url):
        return True
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return False
    return parsed.scheme in ("http", "https") and bool(parsed.host)


def _check_value(value: Any, name: str) -> None:
    """Every string (keys too) in a payload value can be stored and used; known fields are checked further."""
    if isinstance(value, str):
        checked_text(value, name)
    elif isinstance(value, dict):
        for key, item in value.items():
            text = str(key)
            path = text if unusable(text) is None else ascii(text)  # the reason must be encodable itself
            path = f"{name}.{path}" if name else path
            checked_text(text, path)
            _check_value(item, path)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_value(item, f"{name}[{index}]")


def check_order(order: IncomingOrder) -> IncomingOrder:
    """``order`` if everything its job will need later can be stored and used, else WebhookRejected 422 naming the
    field (shared by every adapter: the receiver applies it before the commit and the 2xx).

    Every string field (the payload's included, at any depth) holds valid Unicode without a lone surrogate and
    without NUL, and fits its column; the payload's ``quantity`` is an integer 1..:data:`MAX_QUANTITY`, its
    ``buyer_email`` a string of at most 320 characters (or null), and every ``…url`` field an absolute http(s) URL
    that parses. A refused webhook stores nothing, so the marketplace shows the failure instead of the order being
    accepted and then lost in the worker.
    """
    for name in ("store", "marketplace", "order_id", "product_id"):
        checked_text(getattr(order, name), name, LIMITS[name])
    if order.event_id is not None:
        checked_text(order.event_id, "event_id", LIMITS["event_id"])
    payload = order.payload
    _check_value(payload, "")
    if "quantity" in payload:
        count = payload["quantity"]
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_QUANTITY:
            raise WebhookRejected(422, f"field quantity must be an integer from 1 to {MAX_QUANTITY}")
    buyer = payload.get("buyer_email")
    if buyer is not None:
        if not isinstance(buyer, str):
            raise WebhookRejected(422, "field buyer_email must be a string")
        checked_text(buyer, "buyer_email", LIMITS["buyer_email"])
    if order.buyer_email is not None:  # the adapter's copy, checked for one mailbox before the 2xx (recipient.py)
        checked_text(order.buyer_email, "buyer_email", LIMITS["buyer_email"])
    for key, value in payload.items():
        if (
            str(key).endswith("url")
            and value is not None
            and (not isinstance(value, str) or len(value) > MAX_URL or not usable_url(value))
        ):
            raise WebhookRejected(422, f"field {key} must be an absolute http(s) URL")
    return order
