"""The generator contract: everything a plugin author imports comes from this module (``docs/plugins.md``).

A generator plugin is a class with

* ``name: str`` — how stores refer to it (``generator: pattern``);
* ``Options`` — a pydantic model validating the product's ``options`` at start-up;
* ``__init__(self, options)`` — receives the validated ``Options`` instance, once per configured product; a plugin
  that needs the daemon's services declares ``__init__(self, options, resources)`` and receives a
  :class:`~delivery_daemon.generators.resources.Resources` (store, product, clock, database, stock pool);
* ``generate(self, order: OrderContext) -> Generated`` — sync or ``async``; returns exactly ``order.quantity``
  keys (or no keys at all when it returns a ``download``), plus optional ``text`` and an optional HTTPS
  ``download`` URL;
* optionally ``template: str`` — the delivery text used when the product sets none (e.g. ``"{text}"``).
* optionally ``revoke(self, revocation: RevocationContext) -> None`` — sync or ``async``; called when a content
  the generator made is taken back: its order was refunded, disputed or cancelled, or the operator ran
  ``orders revoke`` / ``orders reissue``. ``revocation.sent`` is False when the content never went out (give it
  back, e.g. a pool key); True when a buyer may hold it (make it stop working). Called until it returns once (at
  least once: again after :class:`Retry`, any other exception but :class:`Dead`, or a crash before its success was
  committed), never again after; it should be idempotent per ``revocation.idempotency_key``;
* optionally ``revocation_list(self, product_id: str, key_hashes: Sequence[str]) -> str`` — the product's revoked
  keys (SHA-256 hex of each) as a document the seller's application can trust, served at
  ``GET /revocations/{store}/{product}``.

It may raise :class:`OutOfStock` (the order waits and is delivered after a refill), :class:`Retry` (try again
later) or :class:`Dead` (never deliver). Any other exception is treated as retryable, and the order is kept.
A call that takes longer than the daemon's generator budget is abandoned and retried. The daemon calls
``generate`` at most once per order unless the call failed; it stores the result before the first delivery attempt,
so whatever ``generate`` returns is what the buyer receives, on every retry.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel

from delivery_daemon.errors import Dead, OutOfStock, Retry
from delivery_daemon.generators.resources import Resources

ORDER_FIELDS = ("store", "marketplace", "order_id", "product_id", "quantity", "buyer_email", "idempotency_key")
"""The fields of an order a plugin may pass on (``to_dict``): never ``options``, which may hold secrets."""


@dataclass(frozen=True)
class OrderContext:
    """What a generator knows about the order it fulfils."""

    store: str
    marketplace: str
    order_id: str
    product_id: str
    quantity: int
    buyer_email: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    idempotency_key: str = ""
    """Stable for this order across retries and restarts: use it to make external side effects idempotent."""

    def to_dict(self) -> dict[str, Any]:
        """The order as JSON-ready data (without ``options``, which may hold the product's secrets)."""
        return {name: getattr(self, name) for name in ORDER_FIELDS}


@dataclass(frozen=True)
class RevocationContext:
    """What a generator's ``revoke`` hook is told: one content of an order is taken back, and why."""

    store: str
    marketplace: str
    order_id: str
    product_id: str
    quantity: int | None
    keys: tuple[str, ...]
    """The revoked content's keys, exactly as delivered (empty for a download-only content)."""
    reason: str
    """``refunded``, ``disputed``, ``cancelled`` (by the marketplace or the operator), ``revoked`` (``orders
    revoke``) or ``reissued`` (``orders reissue``: a new content follows)."""
    sent: bool
    """False only when no delivery attempt was ever made with this content: nobody holds it, so give it back."""
    issue: int = 0
    """Which of the order's contents (0 for the first; ``orders reissue`` makes the next one)."""
    buyer_email: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    idempotency_key: str = ""
    """The :attr:`OrderContext.idempotency_key` the revoked content was generated with."""

    def to_dict(self) -> dict[str, Any]:
        """The revocation as JSON-ready data (without ``options``, which may hold the product's secrets)."""
        order = {name: getattr(self, name) for name in ORDER_FIELDS}
        return {**order, "keys": list(self.keys), "reason": self.reason, "sent": self.sent, "issue": self.issue}


def idempotency_key(store: str, order_id: str, issue: int = 0) -> str:
    """:attr:`OrderContext.idempotency_key` of an order's ``issue``-th content: ``store:order_id`` for the first (as
    every release made it), ``store:order_id#N`` for the N-th re-issue, so a re-issue gets new keys."""
    return f"{store}:{order_id}" + (f"#{issue}" if issue else "")


@dataclass(frozen=True)
class Generated:
    """A generator's answer: ``keys`` (exactly the order's quantity), optional ``text`` and HTTPS ``download``."""

    keys: tuple[str, ...]
    text: str | None = None
    download: str | None = None

    def __init__(self, keys: tuple[str, ...] | list[str], text: str | None = None, download: str | None = None) -> None:
        object.__setattr__(self, "keys", tuple(keys))
        object.__setattr__(self, "text", text)
        object.__setattr__(self, "download", download)


def parse_generated(data: object) -> Generated:
    """A Generated from a JSON answer ``{"keys": [...], "text": ..., "download": ...}`` (for delegating plugins);
    ValueError when it is not one."""
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError('expected a JSON object with a "keys" list')
    text, download = data.get("text"), data.get("download")
    if (
        not all(isinstance(key, str) for key in data["keys"])
        or not isinstance(text, str | None)
        or not isinstance(download, str | None)
    ):
        raise ValueError("keys, text and download must be strings")
    return Generated(keys=data["keys"], text=text, download=download)


class NoOptions(BaseModel):
    """For generators that take no options."""

    model_config = {"extra": "forbid"}


@runtime_checkable
class Generator(Protocol):
    """An instance configured for one product."""

    def generate(self, order: OrderContext) -> Generated | Awaitable[Generated]: ...


@runtime_checkable
class Revocable(Protocol):
    """A generator with the optional ``revoke`` hook."""

    def revoke(self, revocation: RevocationContext) -> Awaitable[None] | None: ...


@runtime_checkable
class PublishesRevocations(Protocol):
    """A generator with the optional ``revocation_list`` hook (e.g. ``signed``)."""

    def revocation_list(self, product_id: str, key_hashes: Sequence[str]) -> str: ...


HOOKS = ("name", "Options", "generate", "stock_remaining", "revoke", "revocation_list")
"""Every attribute the daemon looks for on a plugin or its instances; each is a documented item of the contract
(``docs/plugins.md``, checked by ``tests/generators/test_plugin_docs.py``)."""


class GeneratorPlugin(Protocol):
    """The class a plugin exports (through the ``delivery_daemon.generators`` entry point group)."""

    name: ClassVar[str]
    Options: ClassVar[type[BaseModel]]

    def __call__(self, options: Any) -> Generator: ...


__all__ = [
    "HOOKS",
    "Dead",
    "Generated",
    "Generator",
    "GeneratorPlugin",
    "NoOptions",
    "OrderContext",
    "OutOfStock",
    "PublishesRevocations",
    "Resources",
    "Retry",
    "Revocable",
    "RevocationContext",
    "idempotency_key",
    "parse_generated",
]
