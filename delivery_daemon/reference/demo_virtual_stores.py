"""``delivery-daemon demo --marketplace virtual-stores``: a Virtual Stores shop's carts, delivered by email and marked
fulfilled in the shop.

Everything runs in this process on 127.0.0.1: the reference shop (:class:`~delivery_daemon.reference.virtual_stores.
VirtualStoresShop`: its staff API and the Stripe events of its orders), the daemon (free port, temporary database)
with a ``virtual-stores`` store, and the buyer's mailbox (:mod:`delivery_daemon.reference.demo_smtp`; without aiosmtpd,
a test dependency, the seller's endpoint of the webhook channel instead). Each order is a cart of two digital products
and one physical one (a mug): the buyer gets one delivery with both products' keys, the mug is left to the shop, and
the shop's order ends ``fulfilled``. The mailbox refuses the first mail once (SMTP 451) and the shop's fulfil endpoint
answers the first call 503, to show both retries.

The verdict is the other demos' (:func:`~delivery_daemon.reference.demo.report`), with one more promise per order:
its shop order was marked fulfilled exactly once.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

from delivery_daemon.compose import create_app, default_marketplaces
from delivery_daemon.generators.discovery import discover
from delivery_daemon.http.serving import serve
from delivery_daemon.logs import configure_logging
from delivery_daemon.reference.demo import PRODUCTS, Row, follow, report, say
from delivery_daemon.reference.demo_webhooks import Buyer, buyer_side, demo_settings, pick_channel
from delivery_daemon.reference.virtual_stores import STAFF_EMAIL, ShopOrder, VirtualStoresShop

PHYSICAL = {"product_id": "mug", "quantity": 1, "unit_price": "12.50", "name": "Mug"}
"""The cart's physical item: not a configured product, so the daemon leaves it to the shop."""


def cart(index: int) -> list[dict[str, Any]]:
    """The ``index``-th demo cart: the first digital product 1 to 2 times, the second once, and the mug."""
    first, second = list(PRODUCTS)
    return [
        {"product_id": first, "quantity": 1 + index % 2, "unit_price": "19.90", "name": first},
        {"product_id": second, "quantity": 1, "unit_price": "49.00", "name": second},
        PHYSICAL,
    ]


class Shopfront:
    """What the demo watches: the shop's orders (by the shop's order id, a row's order) and the buyer's side."""

    def __init__(self, shop: VirtualStoresShop, buyer: Buyer) -> None:
        self.shop, self.buyer = shop, buyer
        self.payments: dict[str, ShopOrder] = {}

    def refresh(self, row: Row) -> None:
        order = self.payments[row.order_id]
        # The daemon's order id is the PaymentIntent's: the one the delivery names.
        found = self.buyer.deliveries(order.payment_intent_id)
        row.accepted = len(found)
        row.fulfilled = len(order.fulfilments)
        if found:
            row.keys = found[0].keys
            row.latency_ms = (found[0].at - row.placed_at) * 1000

    async def wait_fulfilled(self, rows: list[Row], deadline_s: float) -> None:
        """Until every delivered order's shop order is fulfilled (the step right after the delivery) or the deadline."""
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if all(self.payments[row.order_id].fulfilments for row in rows if row.accepted):
                break
            await asyncio.sleep(0.05)
        for row in rows:
            self.refresh(row)

    def summary(self) -> str:
        """What the shop's side shows: its orders' states, the fulfil calls it refused, the physical items left."""
        orders = list(self.payments.values())
        states = Counter(order.status for order in orders)
        refused = sum(1 for _, path, status in self.shop.requests if path.endswith("/fulfill") and status >= 500)
        return (
            f"the shop's orders: {', '.join(f'{n} {state}' for state, n in sorted(states.items()))} "
            f"(carrier digital, tracking number dd-<job id>; {refused} fulfil call(s) answered 5xx and retried); "
            f"{len(orders)} {PHYSICAL['name']}(s) left for the shop to ship"
        )


async def run_virtual_stores_demo(orders: int = 6, stream: TextIO | None = None, deadline_s: float = 60.0) -> int:
    """Run the demo; 0 if every cart was delivered exactly once with all its digital keys and fulfilled once."""
    stream = stream or sys.stdout
    title = "delivery-daemon demo: virtual-stores"
    configure_logging("console", "error", stream=sys.stderr)  # the table is the output; errors still show
    channel = pick_channel("email", stream)
    shop = VirtualStoresShop()
    shop.faults.fulfil_failures = [503]  # the first fulfil call fails and is retried on its own
    with tempfile.TemporaryDirectory(prefix="delivery-daemon-demo-") as tmp:
        async with serve(shop.app) as shop_server, buyer_side(channel) as (buyer, delivery, where):
            app = create_app(
                demo_settings(
                    Path(tmp),
                    "virtual-stores",
                    shop.webhook_secret,
                    delivery,
                    api_url=shop_server.url,
                    staff={"email": STAFF_EMAIL, "password": shop.password},
                ),
                marketplaces=default_marketplaces(),
                plugins=discover(),
            )
            async with serve(app) as daemon_server:
                say(
                    stream,
                    f"virtual-stores: the reference shop at {shop_server.url} sends Stripe-signed events to the daemon "
                    f"at {daemon_server.url}; it reads each order from the shop's staff API, delivers the digital "
                    f"keys by {channel} to {where} and marks the shop's order fulfilled",
                )
                say(stream, f"each cart: {' + '.join(PRODUCTS)} (digital) and a {PHYSICAL['name']} (left to the shop)")
                front = Shopfront(shop, buyer)
                rows = await _place(shop, front, f"{daemon_server.url}/webhooks/demo", orders, channel, stream)
                await follow(rows, front.refresh, stream, deadline_s)
                await front.wait_fulfilled(rows, deadline_s)
                say(stream, front.summary())
    return report(rows, stream, title=title)


async def _place(
    shop: VirtualStoresShop, front: Shopfront, url: str, orders: int, channel: str, stream: TextIO
) -> list[Row]:
    """Check out each cart in the shop and send its Stripe event once; an event the daemon did not acknowledge is
    said, and its order stays undelivered in the table."""
    sender = shop.sender(url)
    rows = []
    for index in range(orders):
        items = cart(index)
        order = shop.place_order(items)
        front.payments[order.id] = order
        digital = [item for item in items if item["product_id"] in PRODUCTS]
        label = ", ".join(f"{item['product_id']} x{item['quantity']}" for item in digital)
        rows.append(Row(order.id, label, sum(int(i["quantity"]) for i in digital), time.time(), channel=channel))
        answer = await sender.send(shop.paid_event(order))
        if not answer.is_success:
            say(stream, f"the daemon answered {answer.status_code} to order {order.id}: {answer.text[:200]}")
    return rows
