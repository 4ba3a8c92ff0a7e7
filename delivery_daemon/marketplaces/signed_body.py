"""What the adapters of marketplaces whose webhook *body* is signed have in common (Sellix, Shoppy, Stripe stores,
Standard Webhooks senders).

Their signature covers the whole body, so the quantity and the buyer's email in it are as trustworthy as an API
answer: the adapter keeps them in the job's payload (``quantity``, ``buyer_email``, ``paid``, ``status``) and
:meth:`SignedPayloadAdapter.fetch_order` builds the :class:`~delivery_daemon.order.MarketplaceOrder` from there,
without a network call. None of these marketplaces has an API to deliver keys to, so ``sink()`` is None and the
store must configure a delivery channel (``delivery.channel: email | webhook``).
"""

from __future__ import annotations

import json
import re
from typing import Any

from delivery_daemon.clock import Clock
from delivery_daemon.config import StoreSettings, expect
from delivery_daemon.errors import ConfigError, Dead, WebhookRejected
from delivery_daemon.marketplaces.base import AdapterContext, Sink
from delivery_daemon.order import MarketplaceOrder
from delivery_daemon.storage.models import Job

ORDER_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
DEFAULT_PRODUCT = "default"
"""The product id of an order whose webhook names none: the store's ``default`` product settings apply."""


def mapping(data: dict[str, Any], name: str) -> dict[str, Any]:
    """``data[name]`` when it is an object, else WebhookRejected 422 naming the field."""
    value = data.get(name)
    if not isinstance(value, dict):
        raise WebhookRejected(422, f"field {name} must be an object")
    return value


def optional_mapping(data: dict[str, Any], name: str) -> dict[str, Any]:
    """``data[name]`` when it is an object, else an empty one."""
    value = data.get(name)
    return value if isinstance(value, dict) else {}


def identifier(value: Any, name: str, *, required: bool = True) -> str | None:
    """A string or integer id made of safe characters (it becomes a job's order or product id)."""
    if value is None or value == "":
        if required:
            raise WebhookRejected(422, f"missing field: {name}")
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise WebhookRejected(422, f"field {name} must be a string")
    text = str(value)
    if not ORDER_ID.match(text):
        raise WebhookRejected(422, f"field {name} must be 1 to 128 letters, digits or _.:-")
    return text


def quantity(value: Any, name: str = "quantity") -> int:
    """A positive quantity given as an integer or a decimal string (Stripe metadata values are strings)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise WebhookRejected(422, f"field {name} must be a positive integer")
    return value


def email(value: Any) -> str | None:
    """The buyer's email as the webhook states it: a non-empty string of at most 320 characters (the column's size),
    else None. It is not checked here (a bad email is no reason to lose the order): a store that mails the buyer
    holds an order whose address is not exactly one mailbox (:mod:`delivery_daemon.recipient`), so this must keep
    such a value rather than drop it."""
    if isinstance(value, str) and 1 <= len(value) <= 320:
        return value
    return None


def order_payload(
    count: int, buyer_email: str | None, status: str, *, paid: bool = True, **extra: Any
) -> dict[str, Any]:
    """The job payload :meth:`SignedPayloadAdapter.fetch_order` reads back."""
    return {"quantity": count, "buyer_email": buyer_email, "status": status, "paid": paid, **extra}


class SignedPayloadAdapter:
    """Base for adapters whose signed webhook body carries the whole order; subclasses add ``parse_webhook``."""

    marketplace = ""

    def __init__(self, context: AdapterContext) -> None:
        secret = context.store.webhook_secret
        if secret is None or not secret.get_secret_value():
            raise ConfigError(f"{context.path}.webhook_secret", "required", *expect(StoreSettings, "webhook_secret"))
        self.store = context.store.name
        self.settings = context.store
        self.path = context.path
        self.clock: Clock = context.clock
        self.secret = secret.get_secret_value()

    async def fetch_order(self, job: Job) -> MarketplaceOrder:
        """The order as the signed webhook stated it (see the module docstring)."""
        try:
            data = json.loads(job.payload)
            count = int(data["quantity"])
        except (ValueError, KeyError, TypeError):
            raise Dead("the stored webhook payload has no quantity") from None
        return MarketplaceOrder(
            order_id=job.order_id,
            product_id=job.product_id,
            paid=bool(data.get("paid")),
            status=str(data.get("status") or ""),
            quantity=count,
            buyer_email=data.get("buyer_email"),
        )

    def sink(self) -> Sink | None:
        return None

    def secrets(self) -> list[str]:
        return [self.secret]

    async def aclose(self) -> None:
        return None
