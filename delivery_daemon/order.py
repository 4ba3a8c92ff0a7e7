"""The one internal shape of an order, whatever marketplace it came from."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


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
class MarketplaceOrder:
    """What the marketplace's own API says about an order (the only source the quantity is taken from)."""

    order_id: str
    product_id: str
    paid: bool
    status: str
    quantity: int
    buyer_email: str | None = None


@dataclass(frozen=True)
class Content:
    """What is delivered for an order: stored before the first attempt, re-sent byte for byte on every retry."""

    text: str
    download: str | None
    keys: tuple[str, ...]

    def to_json(self) -> str:
        return json.dumps({"text": self.text, "download": self.download, "keys": list(self.keys)},
                          separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str) -> Content:
        data = json.loads(raw)
        return cls(text=data["text"], download=data.get("download"), keys=tuple(data.get("keys", ())))
