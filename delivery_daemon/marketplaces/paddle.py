"""Paddle Billing: ``Paddle-Signature`` webhooks, trust-but-verify through ``GET /transactions/{id}``, and the
transaction list for the missed-order watchdog.

Signature: ``Paddle-Signature: ts=<unix>;h1=<hex>[;h1=<hex>]``, hex HMAC-SHA256 of ``"{ts}:{raw body}"`` with the
notification destination's secret key (``webhook_secret``, the ``pdl_ntfset_…`` string used as is). Any ``h1`` may
match (Paddle sends one per secret while a secret is rotated). The timestamp must be within ``signature.tolerance``
(default 300 s) of our clock, both ways: Paddle's SDKs allow 5 s, too tight for a clock a little off, and a
replayed event is a duplicate anyway (its ``event_id``).

Events (everything else is acknowledged and ignored):

* ``transaction.completed`` creates the job. The order id is the transaction id (``txn_…``), which refunds and
  chargebacks name too; the product is the first line whose product id (``pro_…``), else price id (``pri_…``), is
  configured (else the first line's product id, for the store's ``default``), the quantity that line's
  (:mod:`.paddle_transactions`). The webhook has no email, only ``customer_id``: verification reads the transaction
  with ``include=customer``, which holds it (one request, no ``GET /customers/{id}``).
* ``adjustment.created`` / ``adjustment.updated`` with ``action: refund`` and ``status: approved`` mark the order
  refunded; ``action: chargeback`` or ``chargeback_warning`` mark it disputed. A refund still
  ``pending_approval`` is ignored: Paddle may reject it, and approving it sends ``adjustment.updated``.

Each event's ``event_id`` (``evt_…``) is its dedup key: Paddle retries for up to 3 days. Paddle must be answered
within 5 s; the receiver answers after the commit and generates later (docs/guarantees.md). ``fetch_order``
confirms the transaction (status ``paid`` or ``completed``, the same line, its quantity) through the API with the
store's ``api_key``; there is no key delivery API, so the store delivers by ``email`` or ``webhook``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from delivery_daemon.config import StoreSettings, expect
from delivery_daemon.errors import ConfigError, WebhookRejected
from delivery_daemon.marketplaces.base import AdapterContext, OrderEvent, WebhookResult, create_client, load_object
from delivery_daemon.marketplaces.listing import ListedOrder, OrderPage
from delivery_daemon.marketplaces.paddle_transactions import (
    PAID_STATUSES,
    PaddleApi,
    customer_email,
    pick_line,
    timestamp,
)
from delivery_daemon.marketplaces.signed_body import SignedPayloadAdapter, identifier, mapping, order_payload
from delivery_daemon.net.signatures import verify_paddle
from delivery_daemon.order import IncomingOrder, MarketplaceOrder
from delivery_daemon.storage.models import Job

API_URL = "https://api.paddle.com"
"""Paddle Billing's live API; a sandbox store sets ``api_url: https://sandbox-api.paddle.com``."""

ADJUSTMENT_EVENTS = ("adjustment.created", "adjustment.updated")
DISPUTES = ("chargeback", "chargeback_warning")


class PaddleAdapter(SignedPayloadAdapter):
    """A Paddle Billing store."""

    marketplace = "paddle"

    def __init__(self, context: AdapterContext) -> None:
        super().__init__(context)
        api_key = context.store.api_key
        if api_key is None or not api_key.get_secret_value():
            raise ConfigError(f"{context.path}.api_key", "required", *expect(StoreSettings, "api_key"))
        self.tolerance = context.store.signature.tolerance
        self._api_key = api_key.get_secret_value()
        self._client = create_client(context, base_url=context.store.api_url or API_URL)
        self.api = PaddleApi(self._client, self._api_key)

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookResult:
        verify_paddle(headers.get("paddle-signature"), body, self.secret, self.clock.now(), self.tolerance)
        event = load_object(body)
        event_id = identifier(event.get("event_id"), "event_id")
        kind = event.get("event_type")
        if kind == "transaction.completed":
            return self.order(mapping(event, "data"), event_id, str(kind))
        if kind in ADJUSTMENT_EVENTS:
            return self._adjustment(mapping(event, "data"), event_id)
        return None

    def order(self, transaction: dict[str, Any], event_id: str | None, event: str) -> IncomingOrder:
        """The job for a completed transaction (from its webhook, or from the transaction list)."""
        order_id = identifier(transaction.get("id"), "data.id")
        assert order_id is not None
        line = pick_line(transaction, self.settings.products)
        customer = identifier(transaction.get("customer_id"), "data.customer_id", required=False)
        return IncomingOrder(
            store=self.store,
            marketplace=self.marketplace,
            order_id=order_id,
            product_id=line.product_id,
            event_id=event_id,
            payload=order_payload(
                line.quantity, None, "completed", event=event, price_id=line.price_id, customer_id=customer
            ),
        )

    def _adjustment(self, adjustment: dict[str, Any], event_id: str | None) -> OrderEvent | None:
        action, status = adjustment.get("action"), adjustment.get("status")
        if action == "refund" and status == "approved":
            kind: Any = "refunded"
        elif action in DISPUTES:
            kind = "disputed"
        else:
            return None
        order_id = identifier(adjustment.get("transaction_id"), "data.transaction_id")
        assert order_id is not None
        reason = adjustment.get("reason")
        detail = f"Paddle {action} ({status})" + (f": {reason}" if isinstance(reason, str) and reason else "")
        return OrderEvent(self.store, self.marketplace, order_id, kind, detail=detail[:500], event_id=event_id)

    async def fetch_order(self, job: Job) -> MarketplaceOrder:
        """The transaction as Paddle's API shows it now (never the webhook's word for the quantity)."""
        transaction = await self.api.transaction(job.order_id)
        line = pick_line(transaction, self.settings.products)
        status = str(transaction.get("status") or "")
        return MarketplaceOrder(
            order_id=job.order_id,
            product_id=line.product_id,
            paid=status in PAID_STATUSES,
            status=status,
            quantity=line.quantity,
            buyer_email=customer_email(transaction),
        )

    async def list_paid_orders(self, since: float, cursor: str | None = None) -> OrderPage:
        """Completed transactions created at or after ``since``, oldest first
        (:class:`~delivery_daemon.marketplaces.listing.OrderListing`); each is deliverable, since the store's channel
        needs nothing from the webhook. A transaction the adapter cannot read as an order is left out."""
        rows, after = await self.api.completed(since, cursor)
        orders = []
        for row in rows:
            try:
                order = self.order(row, None, "transaction.listed")
            except WebhookRejected:  # one unreadable row must not hide the others from the watchdog
                continue
            created = timestamp(row.get("created_at")) or timestamp(row.get("billed_at")) or since
            orders.append(ListedOrder(order=order, created_at=created, deliverable=True))
        return OrderPage(orders, after)

    def secrets(self) -> list[str]:
        return [self.secret, self._api_key]

    async def aclose(self) -> None:
        await self._client.aclose()


class Paddle:
    """The marketplace type, for the explicit list handed to the daemon."""

    name = "paddle"

    def create(self, context: AdapterContext) -> PaddleAdapter:
        return PaddleAdapter(context)
