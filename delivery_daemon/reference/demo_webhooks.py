"""``delivery-daemon demo --marketplace NAME`` for the marketplaces whose orders arrive as webhooks: Sellix, Shoppy,
Stripe-based stores, Standard Webhooks platforms, Polar, Lemon Squeezy (whose reference API also runs: the daemon reads
each order back from it), Gumroad (unsigned Pings to a URL with a token) and SellAuth.

Everything runs in this process on 127.0.0.1: the daemon (free port, temporary database), the seller's endpoint for
the ``webhook`` channel (the reference :class:`~delivery_daemon.reference.standard_webhooks.SellerSystem`) and, for
the email variant, a local SMTP server (:mod:`delivery_daemon.reference.demo_smtp`). The marketplace's reference
sender signs each paid-order webhook as the marketplace does; the first delivery is refused once (503, or SMTP 451)
to show a retry. Sellix's last order is a *dynamic product*: its keys come back in the answer to the webhook itself;
every SellAuth order is (dynamic delivery, one request per invoice item).

The verdict is the SoftStore demo's (:func:`~delivery_daemon.reference.demo.report`): 0 only if each order reached
the buyer's side exactly once with all its keys.
"""

from __future__ import annotations

import contextlib
import secrets
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import httpx

from delivery_daemon.compose import create_app, default_marketplaces
from delivery_daemon.config import parse_settings
from delivery_daemon.generators.discovery import discover
from delivery_daemon.http.serving import serve
from delivery_daemon.logs import configure_logging
from delivery_daemon.reference import gumroad, lemonsqueezy, polar, sellauth, sellix, shoppy, stripe_store
from delivery_daemon.reference.demo import PRODUCTS, TEMPLATE, Row, follow, report, say
from delivery_daemon.reference.demo_smtp import SUBJECT, SmtpSink, smtp_available, smtp_sink
from delivery_daemon.reference.standard_webhooks import SellerSystem, StandardWebhooksSender, new_secret

Place = Callable[[str, str, int], Awaitable[httpx.Response]]  # (order id, product, quantity) -> the daemon's answer


@dataclass(frozen=True)
class Market:
    """How one marketplace's demo store is keyed and how its reference side places a paid order."""

    title: str
    new_secret: Callable[[], str]
    new_order_id: Callable[[], str]  # short enough (13 characters) to be shown whole in the table
    sender: Callable[[str, str], Place]  # (the store's webhook URL, its secret) -> place
    channel: str = "webhook"  # "email": through the SMTP sink when aiosmtpd is installed
    dynamic_last: bool = False  # the last order is a dynamic product, answered in the webhook's response (Sellix)
    one_unit: bool = False  # its orders are of one unit each (Polar)
    answered: bool = False  # every order's keys come back in the answer to its request (SellAuth)
    store: tuple[tuple[str, str], ...] = ()  # more settings of the demo store (Gumroad's seller_id)
    sends: str = "signed webhooks"
    backend: Callable[[str], contextlib.AbstractAsyncContextManager[Backend]] | None = None
    """The marketplace's API, for a marketplace the daemon asks about its orders (Lemon Squeezy): started with the
    webhook secret, it gives the store's extra settings and the sender to use instead of ``sender``."""


@dataclass(frozen=True)
class Backend:
    """A running reference API: the store settings that point the daemon at it, and how it places an order."""

    store: dict[str, Any]
    sender: Callable[[str, str], Place]


@contextlib.asynccontextmanager
async def _backend(market: Market, secret: str) -> AsyncIterator[Backend]:
    if market.backend is None:
        yield Backend({}, market.sender)
        return
    async with market.backend(secret) as backend:
        yield backend


def _sellix(url: str, secret: str) -> Place:
    sender = sellix.SellixSender(url, secret)
    return lambda oid, product, qty: sender.send("order:paid", sellix.order(product, qty, uniqid=oid))


def _shoppy(url: str, secret: str) -> Place:
    sender = shoppy.ShoppySender(url, secret)
    return lambda oid, product, qty: sender.send(100, shoppy.order(product, qty, order_id=oid))


def _stripe(url: str, secret: str) -> Place:
    sender = stripe_store.StripeStoreSender(url, secret)
    return lambda oid, product, qty: sender.send(
        stripe_store.event("payment_intent.succeeded", stripe_store.payment_intent(product, qty, pi_id=oid))
    )


def _standard(url: str, secret: str) -> Place:
    sender = StandardWebhooksSender(url, secret)
    return lambda oid, product, qty: sender.send(
        "order.paid", {"order_id": oid, "product_id": product, "quantity": qty, "email": "buyer@example.org"}
    )


def _polar(url: str, secret: str) -> Place:
    sender = polar.PolarSender(url, secret)
    return lambda oid, product, qty: sender.send("order.paid", polar.order(product, order_id=oid))


@contextlib.asynccontextmanager
async def _lemonsqueezy(secret: str) -> AsyncIterator[Backend]:
    """The reference Lemon Squeezy's API (the daemon reads each order back from it) and its webhooks: an order is
    placed there, then its ``order_created`` is sent (Lemon Squeezy's retries are not needed: the daemon is up)."""
    market = lemonsqueezy.LemonSqueezy(api_key=secrets.token_hex(20), secret=secret)

    def sender(url: str, _secret: str) -> Place:
        market.seller_url = url

        async def place(oid: str, product: str, qty: int) -> httpx.Response:
            market.place(product, qty, order_id=oid)
            await market.pump()
            return httpx.Response(market.webhooks[-1].tries[-1] or 503)  # 0: no answer at all

        return place

    async with serve(market.app) as api:
        yield Backend({"api_url": api.url, "api_key": market.api_key, "store_id": market.store_id}, sender)


def _gumroad(url: str, secret: str) -> Place:
    pinger = gumroad.GumroadPinger(url, secret)

    def place(oid: str, product: str, qty: int) -> Awaitable[httpx.Response]:
        sale = gumroad.GumroadApi().sell(product, qty) | {"id": oid}
        return pinger.ping(gumroad.ping_form(sale))

    return place


def _sellauth(url: str, secret: str) -> Place:
    sender = sellauth.SellAuthSender(url, secret)

    async def place(oid: str, product: str, qty: int) -> httpx.Response:
        invoice, item = (int(part) for part in oid.split("-"))
        response = await sender.attempt(sellauth.invoice_item(product, qty, invoice_id=invoice, item_id=item), oid)
        return response if response is not None else httpx.Response(504, text="no answer within SellAuth's 10 s")

    return place


MARKETS: dict[str, Market] = {
    "sellix": Market(
        "Sellix", lambda: secrets.token_hex(24), lambda: f"sellix-{secrets.token_hex(3)}", _sellix, dynamic_last=True
    ),
    "shoppy": Market("Shoppy", lambda: secrets.token_hex(24), lambda: secrets.token_hex(6), _shoppy),
    "stripe": Market(
        "Stripe-based store", lambda: f"whsec_{secrets.token_hex(24)}", lambda: f"pi_{secrets.token_hex(5)}", _stripe
    ),
    "standard-webhooks": Market(
        "Standard Webhooks platform", new_secret, lambda: f"A-{secrets.token_hex(5)}", _standard, channel="email"
    ),
    "lemonsqueezy": Market(
        "Lemon Squeezy",
        lambda: secrets.token_hex(16),
        lambda: str(secrets.randbelow(9_000_000) + 1_000_000),
        _standard,  # never used: the backend's sender places the order in the reference API first
        channel="email",
        backend=_lemonsqueezy,
    ),
    "polar": Market(
        "Polar", polar.new_secret, lambda: f"P-{secrets.token_hex(5)}", _polar, channel="email", one_unit=True
    ),
    "gumroad": Market(
        "Gumroad",
        lambda: secrets.token_hex(24),
        lambda: f"{secrets.token_urlsafe(8)[:10]}==",
        _gumroad,
        channel="email",
        store=(("seller_id", gumroad.SELLER_ID),),
        sends="unsigned Pings (to a URL with the store's token)",
    ),
    "sellauth": Market(
        "SellAuth",
        lambda: secrets.token_hex(24),
        lambda: f"{secrets.randbelow(10**6)}-{secrets.randbelow(10**5)}",
        _sellauth,
        answered=True,
        sends="signed dynamic-delivery requests",
    ),
}


@dataclass(frozen=True)
class Delivery:
    """One delivery the buyer's side accepted: a webhook, a mail, or a dynamic product's answer."""

    order_id: str
    keys: int
    at: float


class Buyer:
    """What reached the buyer's side, from the seller's endpoint, the SMTP sink and the dynamic answers."""

    def __init__(self, seller: SellerSystem, mailbox: SmtpSink | None) -> None:
        self.seller, self.mailbox = seller, mailbox
        self.answers: list[Delivery] = []
        self._seen_at: list[float] = []  # SellerSystem keeps no time: a webhook's is when the demo first saw it

    def deliveries(self, order_id: str) -> list[Delivery]:
        accepted = self.seller.accepted()
        now = time.time()
        self._seen_at.extend(now for _ in range(len(accepted) - len(self._seen_at)))
        found = [
            Delivery(str(r.body["data"]["order_id"]), len(r.body["data"]["keys"]), at)
            for r, at in zip(accepted, self._seen_at, strict=True)
        ]
        found += [Delivery(m.order_id, m.keys, m.at) for m in self.mailbox.mails] if self.mailbox else []
        return [d for d in [*self.answers, *found] if d.order_id == order_id]

    def refresh(self, row: Row) -> None:
        found = self.deliveries(row.order_id)
        row.accepted = len(found)
        if found:
            row.keys = found[0].keys
            row.latency_ms = (found[0].at - row.placed_at) * 1000


async def run_webhook_demo(
    marketplace: str,
    orders: int = 6,
    stream: TextIO | None = None,
    deadline_s: float = 60.0,
    *,
    market: Market | None = None,
    store: dict[str, Any] | None = None,
) -> int:
    """Run the demo of ``marketplace`` (a key of :data:`MARKETS`, or any adapter with its ``market`` given, e.g. one
    whose reference API the caller serves, and ``store`` settings it needs); 0 if every order was delivered once."""
    stream = stream or sys.stdout
    configure_logging("console", "error", stream=sys.stderr)  # the table is the output; errors still show
    market = market or MARKETS[marketplace]
    channel = pick_channel(market.channel, stream)
    secret = market.new_secret()
    with tempfile.TemporaryDirectory(prefix="delivery-daemon-demo-") as tmp:
        async with buyer_side(channel) as (buyer, delivery, where), _backend(market, secret) as backend:
            app = create_app(
                demo_settings(
                    Path(tmp), marketplace, secret, delivery, **{**dict(market.store), **backend.store, **(store or {})}
                ),
                marketplaces=default_marketplaces(),
                plugins=discover(),
            )
            async with serve(app) as daemon_server:
                say(
                    stream,
                    f"{marketplace}: the reference {market.title} sends {market.sends} to the daemon at "
                    f"{daemon_server.url}; it delivers by {channel} to {where}",
                )
                if market.dynamic_last:
                    say(stream, "the last order is a dynamic product: its keys come back in the webhook's answer")
                if market.answered:
                    say(stream, "every order is a dynamic delivery: its keys come back in the request's answer")
                place = backend.sender(f"{daemon_server.url}/webhooks/demo", secret)
                rows = await _place(market, place, orders, channel, stream, buyer)
                if market.dynamic_last and rows:
                    await _dynamic(f"{daemon_server.url}/webhooks/demo", secret, rows[-1], buyer)
                await follow(rows, buyer.refresh, stream, deadline_s)
    return report(rows, stream, title=f"delivery-daemon demo: {marketplace}")


def pick_channel(wanted: str, stream: TextIO) -> str:
    """``wanted``, or ``webhook`` (said on ``stream``) when it is ``email`` and aiosmtpd is not installed."""
    if wanted == "email" and not smtp_available():
        say(stream, "aiosmtpd is not installed (pip install aiosmtpd): delivering by webhook instead of email")
        return "webhook"
    return wanted


@contextlib.asynccontextmanager
async def buyer_side(channel: str) -> AsyncIterator[tuple[Buyer, dict[str, Any], str]]:
    """The buyer's side on 127.0.0.1 for ``channel`` (``email``: the SMTP sink; else the seller's endpoint), each
    refusing the first delivery once to show a retry; with the demo store's ``delivery`` for it and where it is."""
    seller = SellerSystem(new_secret(), answers=[503])
    async with serve(seller.app) as seller_server, _mailbox(channel == "email") as (mailbox, smtp_port):
        delivery: dict[str, Any] = {
            "channel": "webhook",
            "webhook": {"url": f"{seller_server.url}/hooks/orders", "secret": seller.secret},
        }
        where = f"the seller's endpoint at {seller_server.url}/hooks/orders"
        if mailbox is not None:
            delivery = email_delivery(smtp_port)
            where = f"the buyer's mailbox (SMTP on 127.0.0.1:{smtp_port})"
        yield Buyer(seller, mailbox), delivery, where


@contextlib.asynccontextmanager
async def _mailbox(wanted: bool) -> AsyncIterator[tuple[SmtpSink | None, int]]:
    if not wanted:
        yield None, 0
        return
    async with smtp_sink() as (sink, port):
        yield sink, port


def email_delivery(smtp_port: int) -> dict[str, Any]:
    """A demo store's ``delivery`` through the local SMTP sink on ``smtp_port``."""
    return {
        "channel": "email",
        "email": {
            "host": "127.0.0.1",
            "port": smtp_port,
            "security": "none",
            "sender": "shop@example.org",
            "subject": SUBJECT,
        },
    }


def demo_settings(tmp: Path, marketplace: str, secret: str, delivery: dict[str, Any], **store: Any) -> Any:
    """The demo daemon's settings: one store ``demo`` of ``marketplace`` selling :data:`PRODUCTS`, its database in
    ``tmp``, loopback allowed; ``store`` adds keys to the store (e.g. a shop's ``api_url``)."""
    return parse_settings(
        {
            "database": {"url": f"sqlite:///{tmp / 'demo.db'}"},
            "delivery": {"retry_schedule": [0.3, 1, 2, 5], "timeout": 5},
            "worker": {"poll_interval": 0.2},
            "security": {"allowed_networks": ["127.0.0.1/32"]},  # the seller's endpoint (or the shop) is on loopback
            "stores": [
                {
                    "name": "demo",
                    "marketplace": marketplace,
                    "webhook_secret": secret,
                    "delivery": delivery,
                    **store,
                    "products": {
                        pid: {"generator": "pattern", "options": options, "template": TEMPLATE}
                        for pid, options in PRODUCTS.items()
                    },
                    **store,  # last: a demo may replace the products too
                }
            ],
        },
        environ={},
    )


async def _place(market: Market, place: Place, orders: int, channel: str, stream: TextIO, buyer: Buyer) -> list[Row]:
    """Send each order's paid webhook once (Sellix's last one is left to :func:`_dynamic`); an order the daemon did
    not acknowledge is said, and stays undelivered in the table. A SellAuth answer is the delivery itself."""
    products = list(PRODUCTS)
    rows = []
    for index in range(orders):
        product, quantity = products[index % len(products)], 1 if market.one_unit else 1 + index % 3
        row = Row(
            market.new_order_id(), product, quantity, time.time(), channel="answer" if market.answered else channel
        )
        rows.append(row)
        if market.dynamic_last and index == orders - 1:
            continue
        answer = await place(row.order_id, product, quantity)
        if not answer.is_success:
            say(stream, f"the daemon answered {answer.status_code} to order {row.order_id}: {answer.text[:200]}")
        elif market.answered:
            buyer.answers.append(Delivery(row.order_id, len([k for k in answer.text.split("\n") if k]), time.time()))
    return rows


async def _dynamic(url: str, secret: str, row: Row, buyer: Buyer) -> None:
    """Sellix's product:dynamic: one request, and the whole body of a 2xx answer is what the buyer gets."""
    row.channel, row.placed_at = "answer", time.time()
    product = await sellix.SellixSender(url, secret).dynamic(
        sellix.order(row.product, row.quantity, uniqid=row.order_id)
    )
    if product is not None:
        buyer.answers.append(Delivery(row.order_id, len([k for k in product.split("\n") if k]), time.time()))
