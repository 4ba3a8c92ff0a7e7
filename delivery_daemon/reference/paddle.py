"""A reference Paddle, both products, for end-to-end tests and ``demo --marketplace paddle``:

* **Billing** (:class:`PaddleBilling`): the API the daemon reads (``GET /transactions/{id}`` with
  ``include=customer``, ``GET /transactions`` filtered by status and ``created_at[GTE]``, oldest first, cursor
  ``after``), Bearer API key checked; and :class:`PaddleSender`, which signs events as Paddle documents
  ``Paddle-Signature`` (``ts=<unix>;h1=<hex HMAC-SHA256 of "{ts}:{body}">``, one ``h1`` per active secret during a
  rotation) and, like Paddle, sends an event again while it is not answered 2xx.
* **Classic** (:class:`ClassicVendor`): the fulfilment webhook, form-urlencoded and signed with ``p_signature``
  (RSA-SHA1 over the PHP-serialised sorted fields) with a key pair generated here; the answer's body is what the
  buyer gets (recorded in ``products``). Its alerts (``payment_refunded``, ``payment_dispute_created``) are signed
  with the same key and name the order ``order_id``.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from delivery_daemon.net.classic_signature import sign_fields
from delivery_daemon.net.signatures import paddle_header
from delivery_daemon.reference.sender import WebhookSender, until_answered


def new_id(prefix: str) -> str:
    """A Paddle-style id: ``txn_01…``."""
    return f"{prefix}_01{secrets.token_hex(12)}"


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event(kind: str, data: dict[str, Any], event_id: str | None = None, *, at: float | None = None) -> dict[str, Any]:
    """A Paddle Billing notification envelope."""
    return {
        "event_id": event_id or new_id("evt"),
        "event_type": kind,
        "occurred_at": iso(time.time() if at is None else at),
        "notification_id": new_id("ntf"),
        "data": data,
    }


def adjustment(transaction_id: str, action: str = "refund", status: str = "approved") -> dict[str, Any]:
    """An adjustment (refund, credit or chargeback) of a transaction."""
    return {
        "id": new_id("adj"),
        "action": action,
        "status": status,
        "transaction_id": transaction_id,
        "reason": "requested by customer" if action == "refund" else "chargeback",
        "currency_code": "USD",
        "items": [],
    }


@dataclass
class Transaction:
    id: str
    customer: dict[str, str]
    items: list[dict[str, Any]]
    created_at: float
    status: str = "completed"

    def as_json(self, *, customer: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "status": self.status,
            "customer_id": self.customer["id"],
            "currency_code": "USD",
            "origin": "web",
            "created_at": iso(self.created_at),
            "billed_at": iso(self.created_at),
            "items": self.items,
        }
        if customer:
            data["customer"] = dict(self.customer)
        return data


class PaddleBilling:
    """The Billing account's state and its API (:attr:`app`); ``now`` stamps new transactions."""

    def __init__(self, api_key: str | None = None, *, now: Callable[[], float] = time.time) -> None:
        self.api_key = api_key or f"pdl_live_apikey_{secrets.token_hex(16)}"
        self.now = now
        self.transactions: dict[str, Transaction] = {}
        self.requests: list[str] = []
        self.failures: list[int] = []
        """Statuses the next API requests answer (then 200 again): Paddle having a bad minute."""

    @property
    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/transactions", self._list, methods=["GET"]),
                Route("/transactions/{transaction_id}", self._get, methods=["GET"]),
            ]
        )

    def place(
        self,
        product_id: str,
        quantity: int = 1,
        email: str = "buyer@example.org",
        *,
        price_id: str | None = None,
        extra_items: list[dict[str, Any]] | None = None,
        status: str = "completed",
        txn_id: str | None = None,
    ) -> Transaction:
        """A transaction for ``quantity`` of ``product_id`` (after ``extra_items``, if any), bought by ``email``."""
        item = line(product_id, quantity, price_id)
        customer = {"id": new_id("ctm"), "email": email, "name": "Buyer"}
        txn = Transaction(txn_id or new_id("txn"), customer, [*(extra_items or []), item], self.now(), status)
        self.transactions[txn.id] = txn
        return txn

    def completed(self, txn: Transaction, event_id: str | None = None) -> dict[str, Any]:
        """The ``transaction.completed`` event for ``txn`` (as webhooks carry it: no customer object)."""
        return event("transaction.completed", txn.as_json(), event_id, at=self.now())

    def _denied(self, request: Request) -> Response | None:
        self.requests.append(f"{request.method} {request.url.path}?{request.url.query}")
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return _problem(403, "forbidden", "You aren't permitted to perform this request.")
        if self.failures:
            status = self.failures.pop(0)
            return _problem(status, "internal_error", "Paddle had a bad minute")
        return None

    async def _get(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        txn = self.transactions.get(request.path_params["transaction_id"])
        if txn is None:
            return _problem(404, "not_found", "Entity not found")
        include = request.query_params.get("include", "").split(",")
        return JSONResponse({"data": txn.as_json(customer="customer" in include), "meta": {"request_id": "r"}})

    async def _list(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        query = request.query_params
        per_page = int(query.get("per_page", "30"))
        since = query.get("created_at[GTE]")
        rows = sorted(self.transactions.values(), key=lambda t: (t.created_at, t.id))
        rows = [t for t in rows if t.status in query.get("status", t.status).split(",")]
        if since is not None:
            floor = datetime.fromisoformat(since.replace("Z", "+00:00")).timestamp()
            rows = [t for t in rows if t.created_at >= floor]
        after = query.get("after")
        if after is not None:
            ids = [t.id for t in rows]
            rows = rows[ids.index(after) + 1 :] if after in ids else []
        page, more = rows[:per_page], len(rows) > per_page
        include = "customer" in query.get("include", "").split(",")
        pagination: dict[str, Any] = {"per_page": per_page, "has_more": more, "estimated_total": len(rows)}
        if more:
            pagination["next"] = f"{request.url.path}?after={page[-1].id}"
        return JSONResponse({"data": [t.as_json(customer=include) for t in page], "meta": {"pagination": pagination}})


def line(product_id: str, quantity: int = 1, price_id: str | None = None) -> dict[str, Any]:
    """One transaction line: ``quantity`` of ``product_id``'s price."""
    price = price_id or new_id("pri")
    return {"price_id": price, "price": {"id": price, "product_id": product_id}, "quantity": quantity}


def _problem(status: int, code: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": {"type": "request_error", "code": code, "detail": detail}}, status_code=status)


@dataclass
class PaddleSender(WebhookSender):
    """Sends Paddle Billing events to the seller's notification destination."""

    old_secrets: tuple[str, ...] = ()
    """Secrets still signing during a rotation: one more ``h1`` each."""

    def headers(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        t = int(self.now()) if timestamp is None else timestamp
        return {"Paddle-Signature": paddle_header([*self.old_secrets, self.secret], body, t)}

    async def send(
        self, message: dict[str, Any], *, timestamp: int | None = None, wait: float = 30.0
    ) -> httpx.Response:
        body = self.encode(message)
        return await self.post(body, self.headers(body, timestamp), wait=wait)

    async def deliver(
        self,
        message: dict[str, Any],
        *,
        attempts: int = 60,
        between: Callable[[int], Awaitable[None]] | None = None,
    ) -> list[httpx.Response]:
        """Send ``message`` until it is answered 2xx, at most ``attempts`` times, as Paddle retries a notification
        (the same event, signed again each time); ``between(n)`` runs before try ``n + 1`` (a test advances its
        clock there). Every answer, in order (599: no answer within Paddle's wait)."""
        return await until_answered(lambda: self.send(message), attempts, between)


@dataclass
class ClassicVendor:
    """A Paddle Classic vendor account: its key pair, and the fulfilment requests Paddle makes for its orders."""

    url: str
    private_key: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(65537, 2048))
    products: dict[str, str] = field(default_factory=dict)
    """Order id → the body a 2xx answer gave (what Paddle mails the buyer)."""

    @property
    def public_pem(self) -> str:
        """The vendor's public key as the Paddle dashboard shows it."""
        raw = self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return raw.decode()

    def fields(
        self, product_id: str, quantity: int = 1, email: str | None = "buyer@example.org", order_id: str | None = None
    ) -> dict[str, str]:
        """The fulfilment webhook's fields for an order, signed."""
        fields = {
            "event_time": "2026-12-03 10:00:00",
            "p_country": "DE",
            "p_coupon": "",
            "p_coupon_savings": "0.00",
            "p_currency": "EUR",
            "p_earnings": '{"12345":"8.10"}',
            "p_order_id": order_id or str(secrets.randbelow(10**9)),
            "p_paddle_fee": "0.90",
            "p_price": "9.00",
            "p_product_id": product_id,
            "p_quantity": str(quantity),
            "p_sale_gross": "10.71",
            "p_tax_amount": "1.71",
            "p_used_price_override": "0",
            "passthrough": "",
            "quantity": str(quantity),
        }
        if email is not None:
            fields["email"] = email
            fields["marketing_consent"] = "0"
        fields["p_signature"] = sign_fields(self.private_key, fields)
        return fields

    def alert(self, name: str, order_id: str, *, alert_id: str | None = None, **extra: str) -> dict[str, str]:
        """A Classic alert's fields (``payment_refunded``: a full refund unless ``refund_type`` says otherwise;
        ``payment_dispute_created``), with a fields subset Paddle sends, ``extra`` added, signed."""
        fields = {
            "alert_id": alert_id or str(secrets.randbelow(10**9)),
            "alert_name": name,
            "amount": "10.71",
            "checkout_id": f"{order_id}-chre93c81118fc7-b3092639c1",
            "currency": "EUR",
            "email": "buyer@example.org",
            "event_time": "2026-12-03 11:00:00",
            "marketing_consent": "0",
            "order_id": order_id,
            "passthrough": "",
        }
        if name == "payment_refunded":
            fields |= {"refund_reason": "requested by customer", "refund_type": "full"}
        elif name == "payment_dispute_created":
            fields |= {"fee_usd": "15.00", "status": "open"}
        fields |= extra
        fields["p_signature"] = sign_fields(self.private_key, fields)
        return fields

    async def post_form(self, fields: dict[str, str], *, wait: float = 30.0) -> httpx.Response:
        """POST signed fields once, form-urlencoded, as Paddle Classic sends fulfilment requests and alerts."""
        async with httpx.AsyncClient(timeout=wait) as client:
            return await client.post(
                self.url,
                content=urlencode(fields).encode(),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )

    async def fulfil(self, fields: dict[str, str], *, wait: float = 30.0) -> httpx.Response:
        """POST the fulfilment request once; a 2xx answer's body is recorded as the buyer's product."""
        response = await self.post_form(fields, wait=wait)
        if response.is_success:
            self.products[fields["p_order_id"]] = response.text
        return response
