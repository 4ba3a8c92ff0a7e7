"""A reference Stripe account selling through Checkout Sessions and Payment Links: the read API a seller's secret key
reaches (sessions, their line items, the session list) and the signed events Stripe sends, with Stripe's retries.

API (``Authorization: Bearer <secret key>``, else 401 with Stripe's error shape): ``GET /v1/checkout/sessions/{id}``,
``GET /v1/checkout/sessions/{id}/line_items`` (in the session's order) and ``GET /v1/checkout/sessions`` (newest first;
filters ``status``, ``payment_intent``, ``created[gte]``), each list paged as Stripe pages: ``limit`` 1..100 (default
10), ``starting_after`` (the page after an id) or ``ending_before`` (the page just before it), ``has_more``.
Errors answer ``{"error": {"type", "code"?, "message"}}``: 404 ``resource_missing``, 400 for a bad parameter.

Events (:meth:`StripeCheckoutAccount.emit` queues one, :meth:`StripeCheckoutAccount.deliver_due` sends what is due):
each attempt is signed afresh (``Stripe-Signature`` with the attempt's timestamp, the same ``evt_…`` id). A non-2xx
answer or no answer is retried after :data:`RETRY_DELAYS` (Stripe's live mode: "up to three days with an exponential
back off"; Stripe does not publish the intervals, so these double from one minute), then given up.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from delivery_daemon.reference.stripe_store import StripeStoreSender, charge_refunded, dispute, event, new_id

THREE_DAYS = 3 * 86_400
RETRY_DELAYS = tuple(60.0 * 2**n for n in range(12))
"""Seconds before each retry: 1 min, 2 min, … about 34 h; the last attempt is 68 h (under three days) after the
first."""
UNIT_AMOUNT = 1500


@dataclass
class CheckoutSession:
    """One Checkout Session of the reference account; ``lines`` are ``(price id, product id, quantity)``."""

    id: str
    created: int
    email: str | None
    lines: list[tuple[str, str, int]]
    payment_intent: str
    payment_status: str = "paid"
    status: str = "complete"
    currency: str = "eur"
    line_ids: list[str] = field(default_factory=list)
    seq: int = 0
    """Creation order, for sessions created in the same second."""

    @property
    def amount_total(self) -> int:
        return 0 if self.payment_status == "no_payment_required" else sum(q * UNIT_AMOUNT for _, _, q in self.lines)

    def as_json(self) -> dict[str, Any]:
        """The Checkout Session object (without ``line_items``: it is not included unless expanded)."""
        return {
            "id": self.id,
            "object": "checkout.session",
            "created": self.created,
            "mode": "payment",
            "status": self.status,
            "payment_status": self.payment_status,
            "payment_intent": self.payment_intent,
            "amount_total": self.amount_total,
            "currency": self.currency,
            "customer_details": {"email": self.email} if self.email else None,
            "customer_email": None,
            "livemode": False,
            "metadata": {},
        }

    def line_items(self) -> list[dict[str, Any]]:
        return [
            {
                "id": line_id,
                "object": "item",
                "description": f"Product {product}",
                "quantity": quantity,
                "amount_total": quantity * UNIT_AMOUNT,
                "currency": self.currency,
                "price": {"id": price, "object": "price", "product": product, "unit_amount": UNIT_AMOUNT},
            }
            for line_id, (price, product, quantity) in zip(self.line_ids, self.lines, strict=True)
        ]


@dataclass
class Delivery:
    """An event Stripe is trying to deliver: its attempts' answers (None: no answer) and when it tries next."""

    event: dict[str, Any]
    due: float
    answers: list[int | None] = field(default_factory=list)
    done: bool = False
    """Delivered (a 2xx) or given up."""

    @property
    def delivered(self) -> bool:
        return bool(self.answers) and self.answers[-1] is not None and 200 <= (self.answers[-1] or 0) < 300


class StripeCheckoutAccount:
    """The account's state and its Starlette app (:attr:`app`); ``endpoint`` is the seller's webhook URL."""

    def __init__(
        self,
        *,
        webhook_secret: str | None = None,
        api_key: str | None = None,
        now: Callable[[], float] = time.time,
        retry_delays: tuple[float, ...] = RETRY_DELAYS,
    ) -> None:
        self.webhook_secret = webhook_secret or f"whsec_{secrets.token_hex(24)}"
        self.api_key = api_key or f"sk_test_{secrets.token_hex(24)}"
        self.now = now
        self.retry_delays = retry_delays
        self.endpoint = ""
        self.sessions: dict[str, CheckoutSession] = {}
        self.prices: dict[str, str] = {}
        self.outbox: list[Delivery] = []
        self.api_failures: list[int] = []
        """Statuses the next API requests answer (a fault for tests)."""
        self.requests: list[tuple[str, str, int]] = []
        self._order = itertools.count()
        self.app = Starlette(
            routes=[
                Route("/v1/checkout/sessions", self._list_sessions, methods=["GET"]),
                Route("/v1/checkout/sessions/{id}", self._get_session, methods=["GET"]),
                Route("/v1/checkout/sessions/{id}/line_items", self._line_items, methods=["GET"]),
            ]
        )

    def store(
        self, name: str, api_url: str, seller_url: str, seller_secret: str, products: dict[str, Any]
    ) -> dict[str, Any]:
        """A ``stripe-checkout`` store of this account (served at ``api_url``) in the daemon's settings, delivering
        through the ``webhook`` channel to ``seller_url``; ``products`` keyed by Price or Product id."""
        return {
            "name": name,
            "marketplace": "stripe-checkout",
            "api_url": api_url,
            "api_key": self.api_key,
            "webhook_secret": self.webhook_secret,
            "delivery": {"channel": "webhook", "webhook": {"url": seller_url, "secret": seller_secret}},
            "products": products,
        }

    # -- the seller's catalogue and the buyers' checkouts ---------------------------------------------------

    def price(self, product: str | None = None) -> str:
        """A new Price (``price_…``) of ``product`` (a new ``prod_…`` when not given)."""
        price_id = new_id("price")
        self.prices[price_id] = product or new_id("prod")
        return price_id

    def checkout(
        self, lines: list[tuple[str, int]], *, email: str | None = "buyer@example.org", payment: str = "paid"
    ) -> tuple[CheckoutSession, dict[str, Any]]:
        """A buyer completes a session of ``lines`` (price id, quantity); ``payment`` is its ``payment_status``
        (``unpaid`` for a delayed method). Queues ``checkout.session.completed``; returns the session and the event."""
        session = CheckoutSession(
            id=f"cs_test_{secrets.token_hex(16)}",
            created=int(self.now()),
            email=email,
            lines=[(price, self.prices[price], quantity) for price, quantity in lines],
            payment_intent=new_id("pi"),
            payment_status=payment,
        )
        session.line_ids = [new_id("li") for _ in lines]
        session.seq = next(self._order)
        self.sessions[session.id] = session
        return session, self.emit("checkout.session.completed", session.as_json())

    def settle(self, session: CheckoutSession, *, succeeded: bool = True) -> dict[str, Any]:
        """The delayed payment of ``session`` succeeds (``paid``) or fails; queues the matching event."""
        if succeeded:
            session.payment_status = "paid"
            return self.emit("checkout.session.async_payment_succeeded", session.as_json())
        return self.emit("checkout.session.async_payment_failed", session.as_json())

    def refund(self, session: CheckoutSession, *, refund_created: bool = False) -> list[dict[str, Any]]:
        """A full refund of the session's payment: ``charge.refunded`` (and ``refund.created`` when asked)."""
        sent = [self.emit("charge.refunded", charge_refunded(session.payment_intent, session.amount_total))]
        if refund_created:
            refund = {
                "id": new_id("re"),
                "object": "refund",
                "amount": session.amount_total,
                "currency": session.currency,
                "payment_intent": session.payment_intent,
                "charge": new_id("ch"),
                "status": "succeeded",
            }
            sent.append(self.emit("refund.created", refund))
        return sent

    def dispute(self, session: CheckoutSession) -> dict[str, Any]:
        return self.emit("charge.dispute.created", dispute(session.payment_intent))

    # -- events, with Stripe's retries ----------------------------------------------------------------------

    def emit(self, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Queue an event for the endpoint, due now; returns it (a test may also send it again itself)."""
        message = event(kind, obj)
        message["created"] = int(self.now())
        self.outbox.append(Delivery(message, self.now()))
        return message

    def sender(self) -> StripeStoreSender:
        """Signs each attempt with the time it is made."""
        return StripeStoreSender(self.endpoint, self.webhook_secret, now=self.now)

    async def deliver_due(self) -> list[int | None]:
        """Make every attempt that is due now, in the order the events were queued; the answers (None: none)."""
        answers: list[int | None] = []
        sender = self.sender()
        for delivery in self.outbox:
            if delivery.done or delivery.due > self.now():
                continue
            try:
                status: int | None = (await sender.send(delivery.event)).status_code
            except httpx.HTTPError:
                status = None
            delivery.answers.append(status)
            answers.append(status)
            retries = len(delivery.answers) - 1
            if delivery.delivered or retries >= len(self.retry_delays):
                delivery.done = True
            else:
                delivery.due = self.now() + self.retry_delays[retries]
        return answers

    def pending(self) -> list[Delivery]:
        return [d for d in self.outbox if not d.done]

    # -- the API --------------------------------------------------------------------------------------------

    def _refused(self, request: Request) -> Response | None:
        status = self.api_failures.pop(0) if self.api_failures else None
        if status is not None:
            return self._error(request, status, "api_error", "An error occurred with our connection to Stripe.")
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return self._error(request, 401, "invalid_request_error", "Invalid API Key provided.")
        return None

    def _error(self, request: Request, status: int, kind: str, message: str, code: str | None = None) -> Response:
        self.requests.append((request.method, request.url.path, status))
        error = {"type": kind, "message": message, **({"code": code} if code else {})}
        return JSONResponse({"error": error}, status_code=status)

    def _ok(self, request: Request, body: dict[str, Any]) -> Response:
        self.requests.append((request.method, request.url.path, 200))
        return JSONResponse(body)

    def _session(self, request: Request) -> CheckoutSession | Response:
        """The session the path names, or the refusal to answer."""
        refused = self._refused(request)
        if refused is not None:
            return refused
        session = self.sessions.get(request.path_params["id"])
        if session is None:
            message = f"No such checkout.session: '{request.path_params['id']}'"
            return self._error(request, 404, "invalid_request_error", message, "resource_missing")
        return session

    async def _get_session(self, request: Request) -> Response:
        session = self._session(request)
        return session if isinstance(session, Response) else self._ok(request, session.as_json())

    async def _line_items(self, request: Request) -> Response:
        session = self._session(request)
        if isinstance(session, Response):
            return session
        return self._page(request, session.line_items(), f"/v1/checkout/sessions/{session.id}/line_items")

    async def _list_sessions(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        query = request.query_params
        rows = sorted(self.sessions.values(), key=lambda s: (s.created, s.seq), reverse=True)
        if "status" in query:
            rows = [s for s in rows if s.status == query["status"]]
        if "payment_intent" in query:
            rows = [s for s in rows if s.payment_intent == query["payment_intent"]]
        if "created[gte]" in query:
            try:
                since = int(query["created[gte]"])
            except ValueError:
                return self._error(request, 400, "invalid_request_error", "Invalid integer: created[gte]")
            rows = [s for s in rows if s.created >= since]
        return self._page(request, [s.as_json() for s in rows], "/v1/checkout/sessions")

    def _page(self, request: Request, rows: list[dict[str, Any]], url: str) -> Response:
        """A Stripe list page of ``rows`` (already in list order) as the query asks."""
        query = request.query_params
        try:
            limit = int(query.get("limit", "10"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 100:
            return self._error(request, 400, "invalid_request_error", "limit must be between 1 and 100")
        ids = [row["id"] for row in rows]
        after, before = query.get("starting_after"), query.get("ending_before")
        cursor = after or before
        if cursor is not None and cursor not in ids:
            return self._error(request, 400, "invalid_request_error", f"No such object: '{cursor}'", "resource_missing")
        if after is not None:
            window = rows[ids.index(after) + 1 :]
            data, more = window[:limit], len(window) > limit
        elif before is not None:
            window = rows[: ids.index(before)]
            data, more = window[-limit:], len(window) > limit
        else:
            data, more = rows[:limit], len(rows) > limit
        return self._ok(request, {"object": "list", "url": url, "has_more": more, "data": data})
