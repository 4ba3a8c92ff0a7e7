"""Stripe Checkout and Payment Links (``marketplace: stripe-checkout``): one job per paid Checkout Session, whatever its
line items, delivered by the store's channel (email or the signed webhook; Stripe has no delivery API).

Receive (the Stripe signature check of :mod:`~delivery_daemon.marketplaces.stripe_store`, and its refund and dispute
parsing):

* ``checkout.session.completed`` with ``payment_status`` ``paid`` (or ``no_payment_required``: a 100 % discount,
  fulfilled as Stripe's fulfilment guide does for anything not ``unpaid``; a ``setup``-mode session, which only saves
  a card, is not an order) queues a job whose order id is the
  **Checkout Session id** (``cs_…``) and whose product id is ``cart``. ``unpaid`` (a delayed method such as SEPA
  Direct Debit or a bank transfer is still on its way) stores nothing; ``checkout.session.async_payment_succeeded``
  later queues the job. Both events for one session are one job (the second is a duplicate); each event's ``evt_…``
  id is remembered (:mod:`delivery_daemon.storage.events`). ``checkout.session.async_payment_failed`` and every other
  type are acknowledged and ignored: nothing was stored for the unpaid session, so there is nothing to cancel.
* ``charge.refunded``, ``refund.created`` (unless its status is ``failed`` or ``canceled``) and
  ``charge.dispute.created`` name a PaymentIntent; the receiver asks :meth:`StripeCheckoutAdapter.resolve_event` for
  its session (``GET /v1/checkout/sessions?payment_intent=pi_…``) and cancels or flags that session's job. A payment
  that no Checkout Session made (an event without a PaymentIntent, or one Stripe finds no session for) is ignored.

Verify (:meth:`StripeCheckoutAdapter.fetch_order`, trust but verify): the session is read again with the secret key
(``GET /v1/checkout/sessions/{id}``); it must be ``paid`` / ``no_payment_required`` (``unpaid``: retried while the
session is open or complete, dead once it expired). Its line items come from the event when it carries the whole list
(it never does unless the seller forwards expanded sessions), else from ``GET /v1/checkout/sessions/{id}/line_items``
(paged). Each line whose Price id (``price_…``), else Product id (``prod_…``), is a key of ``products`` becomes an
:class:`~delivery_daemon.order.OrderItem`; other lines are left alone (not digital); ``default`` never applies to a
line. A session with no configured line is dead. The buyer's email is ``customer_details.email`` (else
``customer_email``).

List (:meth:`StripeCheckoutAdapter.list_paid_orders`, for the missed-order watchdog): see its docstring.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from delivery_daemon.config import StoreSettings, expect
from delivery_daemon.errors import ConfigError, Dead, Held, Retry
from delivery_daemon.marketplaces.base import AdapterContext, OrderEvent, WebhookResult, create_client
from delivery_daemon.marketplaces.listing import ListedOrder, OrderPage
from delivery_daemon.marketplaces.signed_body import email, identifier, optional_mapping
from delivery_daemon.marketplaces.stripe_checkout_api import PAGE, STRIPE_API, StripeApi
from delivery_daemon.marketplaces.stripe_store import StripeStoreAdapter
from delivery_daemon.marketplaces.virtual_stores import CART
from delivery_daemon.order import IncomingOrder, MarketplaceOrder, OrderItem
from delivery_daemon.storage.models import Job

SESSION_EVENTS = ("checkout.session.completed", "checkout.session.async_payment_succeeded")
FULFIL = frozenset({"paid", "no_payment_required"})
"""The ``payment_status`` values that are fulfilled (Stripe's guide: anything but ``unpaid``)."""


class StripeCheckoutAdapter(StripeStoreAdapter):
    """A store selling through Stripe Checkout Sessions or Payment Links (see the module docstring)."""

    marketplace = "stripe-checkout"
    itemised = True
    """Its orders are sessions of line items: :mod:`~delivery_daemon.pipeline.steps` generates per item."""

    def __init__(self, context: AdapterContext) -> None:
        super().__init__(context)
        store = context.store
        key = store.api_key.get_secret_value() if store.api_key is not None else ""
        if not key:
            raise ConfigError(
                f"{context.path}.api_key",
                "required (a Stripe secret or restricted key that can read Checkout Sessions)",
                "the key from Stripe Dashboard > Developers > API keys, best given as ${ENV_VAR}",
                "${STRIPE_SECRET_KEY}",
            )
        if not store.products:
            raise ConfigError(
                f"{context.path}.products",
                "required: Stripe Price or Product ids to the product each delivers",
                *expect(StoreSettings, "products"),
            )
        self.key = key
        self.digital = frozenset(store.products)
        self._client = create_client(context, base_url=store.api_url or STRIPE_API)
        self.api = StripeApi(self._client, key)

    # -- receive ---------------------------------------------------------------------------------------------

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookResult:
        result = super().parse_webhook(headers, body)  # the signature check; refunds and disputes; completed
        if result is not None:
            return result
        event = json.loads(body)  # verified, parsed and its data.object checked by the Stripe adapter already
        kind, obj = event.get("type"), event["data"]["object"]
        if kind == "checkout.session.async_payment_succeeded":
            return self._order(kind, obj, str(event["id"]))
        if kind == "refund.created" and obj.get("status") not in ("failed", "canceled"):
            payment = identifier(obj.get("payment_intent"), "data.object.payment_intent", required=False)
            if payment is None:
                return None
            amount = f"refund of {obj.get('amount')} {obj.get('currency', '')}".strip()
            return OrderEvent(
                self.store, self.marketplace, payment, "refunded", detail=amount, event_id=str(event["id"])
            )
        return None

    def _order(self, kind: str, obj: dict[str, Any], event_id: str | None) -> IncomingOrder | None:
        """The job for a session event (``payment_intent.succeeded`` is left to the session's events)."""
        return self.session_order(obj, event_id, event=kind) if kind in SESSION_EVENTS else None

    def session_order(self, session: dict[str, Any], event_id: str | None, *, event: str) -> IncomingOrder | None:
        """The order a paid Checkout Session makes (None while it is unpaid): from a webhook or the session list."""
        if session.get("payment_status") not in FULFIL:
            return None  # a delayed method: checkout.session.async_payment_succeeded follows when the money is in
        if session.get("mode") == "setup":
            return None  # a card saved for later (no_payment_required, no line items): nothing was bought
        session_id = identifier(session.get("id"), "data.object.id")
        assert session_id is not None
        details = optional_mapping(session, "customer_details")
        buyer = email(details.get("email")) or email(session.get("customer_email"))
        payment = identifier(session.get("payment_intent"), "data.object.payment_intent", required=False)
        payload: dict[str, Any] = {
            "buyer_email": buyer,
            "status": str(session.get("payment_status")),
            "paid": True,
            "event": event,
            "payment_intent": payment,
        }
        lines = optional_mapping(session, "line_items")
        if isinstance(lines.get("data"), list) and lines.get("has_more") is False:
            payload["lines"] = [_line(line) for line in lines["data"] if isinstance(line, dict)]
        return IncomingOrder(
            store=self.store,
            marketplace=self.marketplace,
            order_id=session_id,
            product_id=CART,
            event_id=event_id,
            buyer_email=buyer,
            payload=payload,
        )

    async def resolve_event(self, event: OrderEvent) -> OrderEvent | None:
        """The refund or dispute of a PaymentIntent as one about its Checkout Session's job; None when no session
        made the payment. Raises Retry (the receiver answers 503 and Stripe resends) when Stripe cannot be asked."""
        if not event.order_id.startswith("pi_"):
            return None  # a charge without a PaymentIntent: never a Checkout payment
        session = await self.api.session_for_payment(event.order_id)
        session_id = session.get("id") if session else None
        if not isinstance(session_id, str) or identifier(session_id, "id", required=False) is None:
            return None
        detail = f"{event.detail} (payment {event.order_id})" if event.detail else f"payment {event.order_id}"
        return dataclasses.replace(event, order_id=session_id, detail=detail)

    # -- verify ----------------------------------------------------------------------------------------------

    async def fetch_order(self, job: Job) -> MarketplaceOrder:
        """The session as Stripe says it now, with its configured line items (see the module docstring)."""
        stored = json.loads(job.payload)
        session = await self.api.session(job.order_id)
        if session is None:
            raise Dead(f"Stripe has no Checkout Session {job.order_id}")
        if session.get("id") != job.order_id:
            raise Held(f"Stripe answered session {session.get('id')} for {job.order_id}")
        status = str(session.get("payment_status") or "")
        if status not in FULFIL:
            if status == "unpaid" and session.get("status") != "expired":
                raise Retry(f"session {job.order_id} is not paid yet")
            raise Dead(f"session {job.order_id} payment status is {status or 'missing'} ({session.get('status')})")
        lines = stored.get("lines")
        if not isinstance(lines, list):
            lines = [_line(line) for line in await self.api.line_items(job.order_id)]
        items = self.items(lines)
        if not items:
            raise Dead(f"no line item of session {job.order_id} is a product configured for this store")
        details = optional_mapping(session, "customer_details")
        buyer = email(details.get("email")) or email(session.get("customer_email")) or stored.get("buyer_email")
        return MarketplaceOrder(
            order_id=job.order_id,
            product_id=job.product_id,
            paid=True,
            status=status,
            quantity=sum(item.quantity for item in items),
            buyer_email=buyer,
            items=items,
        )

    def items(self, lines: list[Any]) -> tuple[OrderItem, ...]:
        """The lines that are configured products (Price id first, then Product id), one item per product."""
        counts: dict[str, int] = {}
        for line in lines:
            if not isinstance(line, dict):
                continue
            key = next((k for k in (line.get("price"), line.get("product")) if k in self.digital), None)
            count = line.get("quantity")
            if key is None or isinstance(count, bool) or not isinstance(count, int) or count < 1:
                continue  # not one of ours: something else the seller sells in the same session
            counts[key] = counts.get(key, 0) + count
        return tuple(OrderItem(product_id, count) for product_id, count in counts.items())

    # -- list ------------------------------------------------------------------------------------------------

    async def list_paid_orders(self, since: float, cursor: str | None = None) -> OrderPage:
        """Paid sessions created at or after ``since``, oldest first (``GET /v1/checkout/sessions?status=complete``).

        Stripe lists newest first, so the first call pages down with ``starting_after`` to the oldest session since
        ``since`` and returns the oldest page; the cursor is the newest session returned, and the next call asks
        for the page just newer than it (``ending_before``). Unpaid sessions are skipped (not paid yet). Every order
        is ``deliverable``: the store's channel needs nothing that only a webhook carries. ``created_at`` is the
        session's ``created`` (when the buyer opened it; a session may complete up to 24 hours later)."""
        base: dict[str, str | int] = {"status": "complete", "created[gte]": int(since)}
        path = "/v1/checkout/sessions"
        if cursor is None:
            newest_first: list[dict[str, Any]] = []
            params = dict(base)
            while True:
                rows, more = await self.api.page(path, params, "the session list")
                newest_first.extend(rows)
                last = rows[-1].get("id") if rows else None
                if not more or not isinstance(last, str):
                    break
                params = {**base, "starting_after": last}
            page = list(reversed(newest_first))[:PAGE]
            more_after = len(newest_first) > PAGE
        else:
            rows, more_after = await self.api.page(path, {**base, "ending_before": cursor}, "the session list")
            page = list(reversed(rows))
        newest = page[-1].get("id") if page else None
        listed = [self._listed(session) for session in page]
        return OrderPage(
            orders=[order for order in listed if order is not None],
            cursor=newest if more_after and isinstance(newest, str) else None,
        )

    def _listed(self, session: dict[str, Any]) -> ListedOrder | None:
        order = self.session_order(session, None, event="list")
        created = session.get("created")
        if order is None or isinstance(created, bool) or not isinstance(created, int | float):
            return None
        return ListedOrder(order=order, created_at=float(created), deliverable=True)

    def secrets(self) -> list[str]:
        return [*super().secrets(), self.key]

    async def aclose(self) -> None:
        await self._client.aclose()


def _line(line: dict[str, Any]) -> dict[str, Any]:
    """A Stripe line item as the job keeps it: its Price and Product ids and its quantity."""
    price = line.get("price")
    price_id = price.get("id") if isinstance(price, dict) else price
    product = price.get("product") if isinstance(price, dict) else None
    product_id = product.get("id") if isinstance(product, dict) else product
    quantity = line.get("quantity")
    return {
        "price": price_id if isinstance(price_id, str) else None,
        "product": product_id if isinstance(product_id, str) else None,
        "quantity": quantity if isinstance(quantity, int) and not isinstance(quantity, bool) else None,
    }


class StripeCheckout:
    """The marketplace type, for the explicit list handed to the daemon."""

    name = "stripe-checkout"

    def create(self, context: AdapterContext) -> StripeCheckoutAdapter:
        return StripeCheckoutAdapter(context)
