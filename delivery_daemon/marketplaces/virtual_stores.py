"""Virtual Stores (a multi-tenant shop on Stripe) as a marketplace: Stripe's signed events say *that* an order was
paid; the shop's own staff API says *what* was bought, and is told when it was delivered.

Receive: the Stripe events of :mod:`~delivery_daemon.marketplaces.stripe_store` (same signature check, same event
parsing and dedup). The job's order id is the PaymentIntent id; its product id is :data:`CART` (the cart's products are
read from the shop); the payload keeps the shop's order id (``metadata.order_id``) and the amount and currency Stripe
charged.

Verify (:meth:`VirtualStoresAdapter.fetch_order`): the shop's order (``GET /api/orders/{metadata.order_id}``, else the
order found by searching for the PaymentIntent) must name the same PaymentIntent, be ``paid`` (not yet paid: retried,
the shop handles the same Stripe event; refunded or failed: dead) and total what Stripe charged in the same currency —
else the job is ``held`` with the reason, never delivered. Each item of the order that is a configured product
(``products`` key ``"{product_id}:{variant_id}"``, else ``"{product_id}"``) becomes an
:class:`~delivery_daemon.order.OrderItem`; other items (physical goods) are left to the shop. ``default`` never applies
to an item. An order with no such item is :class:`~delivery_daemon.errors.NothingDue`: the job ends ``cancelled``,
nothing is delivered or fulfilled.

After delivery (:meth:`VirtualStoresAdapter.after_delivery`, run by :mod:`~delivery_daemon.pipeline.followup`):
``POST /api/orders/{id}/fulfill`` with carrier ``digital``, the delivery id as tracking number and the download link
as tracking URL, unless the shop's order already says it is fulfilled (a lost answer is not fulfilled twice). A
``charge.refunded`` event is also written to the shop's order (``PUT /api/orders/{id}/status``, best effort, see
:meth:`VirtualStoresAdapter._note_refund`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import structlog

from delivery_daemon.config import StoreSettings, expect
from delivery_daemon.errors import ConfigError, Dead, Held, NothingDue, Retry
from delivery_daemon.marketplaces.base import AdapterContext, OrderEvent, WebhookResult, create_client
from delivery_daemon.marketplaces.listing import ListedOrder, OrderPage
from delivery_daemon.marketplaces.order_lists import epoch_seconds
from delivery_daemon.marketplaces.signed_body import email
from delivery_daemon.marketplaces.stripe_store import StripeStoreAdapter
from delivery_daemon.marketplaces.virtual_stores_api import ShopApi, StaffSession, payment_intent_of
from delivery_daemon.order import Content, IncomingOrder, MarketplaceOrder, OrderItem
from delivery_daemon.storage.models import Job

log = structlog.get_logger("delivery_daemon.virtual_stores")

CART = "cart"
"""The product id of every Virtual Stores job: what was bought is the shop order's items."""
PAID = frozenset({"paid", "succeeded", "completed"})
NOT_YET = frozenset({"pending", "unpaid", "processing", "awaiting_payment", "requires_payment"})
ZERO_DECIMAL = frozenset(
    {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"}
)
"""Stripe's zero-decimal currencies: their amounts are whole units, not hundredths."""
NOTE_DELAYS = (1.0, 5.0, 30.0)
FULFILLED = frozenset({"fulfilled", "shipped", "delivered", "completed"})
"""Shop order statuses after which the daemon does not call ``fulfill`` (again)."""
LIST_PAGE_SIZE = 100
"""Orders asked for per page of the shop's order list (the watchdog)."""


def minor_units(total: Any, currency: str) -> int | None:
    """A shop total (``"49.80"``, ``49.8``) in Stripe's smallest currency unit; None when it is not a number."""
    if isinstance(total, bool) or not isinstance(total, str | int | float):
        return None
    try:
        value = Decimal(str(total))
    except InvalidOperation:
        return None
    return int((value if currency.lower() in ZERO_DECIMAL else value * 100).to_integral_value())


def _int(value: Any) -> int | None:
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class VirtualStoresAdapter(StripeStoreAdapter):
    """A Virtual Stores shop: Stripe events, the shop's staff API for orders and fulfilment."""

    marketplace = "virtual-stores"
    itemised = True
    """Its orders are carts: :mod:`~delivery_daemon.pipeline.steps` generates per item."""

    def __init__(self, context: AdapterContext) -> None:
        super().__init__(context)
        store = context.store
        if store.api_url is None:
            raise ConfigError(f"{context.path}.api_url", "required", *expect(StoreSettings, "api_url"))
        if store.staff is None:
            raise ConfigError(
                f"{context.path}.staff",
                "required (the shop's staff login: email and password)",
                *expect(StoreSettings, "staff"),
            )
        self.api_url = store.api_url
        self.digital = frozenset(store.products)
        self._client = create_client(context, base_url=self.api_url)
        self.session = StaffSession(
            self._client, store.staff.email, store.staff.password.get_secret_value(), context.clock, self.store
        )
        self.api = ShopApi(self._client, self.session)
        self._notes: set[asyncio.Task[None]] = set()

    # -- receive ---------------------------------------------------------------------------------------------

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookResult:
        result = super().parse_webhook(headers, body)
        if isinstance(result, OrderEvent) and result.kind == "refunded":
            event = json.loads(body)  # parsed and checked by the Stripe adapter already
            obj = event["data"]["object"]
            metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
            full = obj.get("amount_refunded") == obj.get("amount")
            self._schedule_note(
                result.order_id,
                metadata.get("order_id"),
                "refunded" if full else "partially_refunded",
                result.detail or "refunded",
            )
        return result

    def _order(self, kind: str, obj: dict[str, Any], event_id: str | None) -> IncomingOrder | None:
        order = super()._order(kind, obj, event_id)
        if order is None:
            return None
        payload = {k: v for k, v in order.payload.items() if k != "quantity"}  # the shop's items say how many
        amount = obj.get("amount_received") or obj.get("amount") or obj.get("amount_total")
        payload["amount"] = amount if isinstance(amount, int) and not isinstance(amount, bool) else None
        currency = obj.get("currency")
        payload["currency"] = currency.lower() if isinstance(currency, str) else None
        return IncomingOrder(
            store=order.store,
            marketplace=order.marketplace,
            order_id=order.order_id,
            product_id=CART,
            payload=payload,
            event_id=order.event_id,
            buyer_email=order.buyer_email,
        )

    # -- verify ----------------------------------------------------------------------------------------------

    async def _shop_order(self, job: Job, stored: dict[str, Any]) -> dict[str, Any]:
        reference = stored.get("reference")
        order = await (self.api.order(str(reference)) if reference else self.api.order_by_payment(job.order_id))
        if order is None:
            raise Held(
                f"the shop has no order {reference}" if reference else f"the shop has no order paid with {job.order_id}"
            )
        return order

    async def fetch_order(self, job: Job) -> MarketplaceOrder:
        """The shop's order, checked against what Stripe charged (see the module docstring)."""
        stored = json.loads(job.payload)
        order = await self._shop_order(job, stored)
        shop_id = order.get("id", stored.get("reference"))
        paid_with = payment_intent_of(order)
        if paid_with is not None and paid_with != job.order_id:
            raise Held(f"shop order {shop_id} was paid with {paid_with}, not {job.order_id}")
        status = str(order.get("payment_status") or "").lower()
        if status in NOT_YET:
            raise Retry(f"the shop has not recorded the payment of order {shop_id} yet ({status})")
        if status not in PAID:
            raise Dead(f"shop order {shop_id} payment status is {status or 'missing'}")
        currency = str(order.get("currency") or "").lower()
        if stored.get("currency") is not None and currency != stored["currency"]:
            raise Held(
                f"currency mismatch: Stripe charged {stored['currency']}, shop order {shop_id} is in "
                f"{currency or 'no currency'}"
            )
        total = minor_units(order.get("total", order.get("total_amount")), currency)
        if stored.get("amount") is not None and total != stored["amount"]:
            raise Held(
                f"amount mismatch: Stripe charged {stored['amount']}, shop order {shop_id} totals {total} "
                f"(in {currency} minor units)"
            )
        items = self.items(order)
        if not items:
            raise NothingDue(
                f"no digital goods due: shop order {shop_id} has no item that is a product of this store "
                "(physical goods only); nothing delivered, the order is left to the shop"
            )
        buyer = order.get("customer_email") or order.get("email")
        if not isinstance(buyer, str):
            customer = order.get("customer")
            buyer = customer.get("email") if isinstance(customer, dict) else None
        return MarketplaceOrder(
            order_id=job.order_id,
            product_id=job.product_id,
            paid=True,
            status=status,
            quantity=sum(item.quantity for item in items),
            buyer_email=buyer if isinstance(buyer, str) else stored.get("buyer_email"),
            items=items,
        )

    def items(self, order: dict[str, Any]) -> tuple[OrderItem, ...]:
        """The order's lines that are configured products, one per product (lines of one product added up)."""
        lines: list[Any] = next(
            (order[k] for k in ("items", "order_items", "line_items") if isinstance(order.get(k), list)), []
        )
        counts: dict[str, int] = {}
        for line in lines:
            if not isinstance(line, dict):
                continue
            product, variant = line.get("product_id"), line.get("variant_id")
            keys = ([f"{product}:{variant}"] if variant not in (None, "") else []) + [str(product)]
            key = next((k for k in keys if k in self.digital), None)
            count = _int(line.get("quantity"))
            if key is None or count is None or count < 1:
                continue  # not a digital product of ours (physical goods): the shop ships it
            counts[key] = counts.get(key, 0) + count
        return tuple(OrderItem(product_id, count) for product_id, count in counts.items())

    # -- list (the missed-order watchdog) ---------------------------------------------------------------------

    async def list_paid_orders(self, since: float, cursor: str | None = None) -> OrderPage:
        """One page of the shop's paid orders placed at or after ``since`` (``GET /api/orders`` with
        ``payment_status=paid``, ``date_from`` the day of ``since`` and ``page``/``page_size``), each normalised as
        its ``payment_intent.succeeded`` event would be (order id the PaymentIntent, payload ``event: listed``).
        Deliverable through the store's email or webhook channel. Skipped: an order naming no PaymentIntent (not
        paid through Stripe, so no event of this store will ever name it) and one with no configured product."""
        page = int(cursor) if cursor and cursor.isdigit() else 1
        day = datetime.fromtimestamp(since, UTC).strftime("%Y-%m-%d")
        rows, more = await self.api.orders_page(page, LIST_PAGE_SIZE, day)
        found: list[ListedOrder] = []
        for row in rows:
            placed = epoch_seconds(row.get("created_at"))
            listed = self._listed(row, placed) if placed is not None and placed >= since else None
            if listed is not None:
                found.append(listed)
        return OrderPage(sorted(found, key=lambda listed: listed.created_at), str(page + 1) if more else None)

    def _listed(self, row: dict[str, Any], placed: float) -> ListedOrder | None:
        payment = payment_intent_of(row)
        if payment is None or str(row.get("payment_status") or "").lower() not in PAID or not self.items(row):
            return None  # not paid through Stripe, not paid, or nothing of ours in it (physical goods: the shop's)
        currency = str(row.get("currency") or "").lower() or None
        buyer = email(row.get("customer_email"))
        order = IncomingOrder(
            store=self.store,
            marketplace=self.marketplace,
            order_id=payment,
            product_id=CART,
            buyer_email=buyer,
            payload={
                "buyer_email": buyer,
                "status": "succeeded",
                "paid": True,
                "reference": str(row["id"]) if row.get("id") not in (None, "") else None,
                "event": "listed",
                "amount": minor_units(row.get("total", row.get("total_amount")), currency or ""),
                "currency": currency,
            },
        )
        if self.settings.delivery.channel not in ("email", "webhook"):
            return ListedOrder(order, placed, False, "the store has no email or webhook delivery channel")
        return ListedOrder(order, placed, True)

    # -- after delivery --------------------------------------------------------------------------------------

    async def after_delivery(self, job: Job, content: Content) -> str:
        """Mark the shop's order fulfilled: carrier ``digital``, tracking number ``dd-{job id}``, the download link.
        Raises Retry (tried again later, alone) or Dead.

        The order is read first and left alone when its status is already one of :data:`FULFILLED`: a fulfil call
        whose answer was lost (a timeout, the daemon killed before it recorded the outcome) is not made twice."""
        stored = json.loads(job.payload)
        order = await self._shop_order(job, stored)
        shop_id = str(order.get("id") or stored.get("reference"))
        current = str(order.get("status") or "").lower()
        if current in FULFILLED:
            return f"shop order {shop_id} fulfilled (already: {current})"
        status = await self.api.fulfil(shop_id, f"dd-{job.id}", content.download)
        return f"shop order {shop_id} fulfilled" + (" (already)" if status == 409 else "")

    def _schedule_note(self, payment: str, reference: Any, status: str, detail: str) -> None:
        try:
            task = asyncio.get_running_loop().create_task(self._note_refund(payment, reference, status, detail))
        except RuntimeError:  # parsed outside the daemon's loop (a tool): nothing to tell
            return
        self._notes.add(task)
        task.add_done_callback(self._notes.discard)

    async def _note_refund(self, payment: str, reference: Any, status: str, detail: str) -> None:
        """Write a refund Stripe reported to the shop's order timeline: tried a few times, then logged. Best effort
        (not stored: a restart meanwhile loses it); the daemon's own record of the refund is the job's history."""
        note = f"delivery-daemon: {detail}; undelivered keys are cancelled, delivered ones are flagged"
        for delay in (*NOTE_DELAYS, None):
            try:
                shop_id = (
                    str(reference) if reference else str((await self.api.order_by_payment(payment) or {}).get("id", ""))
                )
                if not shop_id:
                    raise Dead("no shop order for the payment")
                await self.api.note_status(shop_id, status, note)
                log.info("shop.refund_noted", store=self.store, order_id=payment)
                return
            except Exception as exc:  # logged; the refund itself is stored already
                if delay is None or isinstance(exc, Dead):
                    log.warning("shop.refund_note_failed", store=self.store, order_id=payment, error=str(exc)[:300])
                    return
                await asyncio.sleep(delay)

    async def notes_sent(self) -> None:
        """Wait for the refund notes under way (tests, shutdown)."""
        while self._notes:
            await asyncio.gather(*self._notes, return_exceptions=True)

    def secrets(self) -> list[str]:
        return [*super().secrets(), *self.session.secrets()]

    async def aclose(self) -> None:
        for task in list(self._notes):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._notes, return_exceptions=True)
        await self._client.aclose()


class VirtualStores:
    """The marketplace type, for the explicit list handed to the daemon."""

    name = "virtual-stores"

    def create(self, context: AdapterContext) -> VirtualStoresAdapter:
        return VirtualStoresAdapter(context)
