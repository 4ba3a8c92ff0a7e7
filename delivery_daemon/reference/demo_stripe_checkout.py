"""``delivery-daemon demo --marketplace stripe-checkout``: Stripe Checkout sessions, end to end on this machine.

The reference Stripe account (:mod:`~delivery_daemon.reference.stripe_checkout`: its API and its signed events with
retries), the daemon with a ``stripe-checkout`` store and the seller's endpoint for the ``webhook`` channel all run in
this process on 127.0.0.1. Buyers complete sessions of one or two products (every third has both); the second pays
by a delayed method, so its keys go out only when ``checkout.session.async_payment_succeeded`` arrives; the seller's
endpoint refuses the first delivery once, to show a retry. The verdict is the other demos'
(:func:`~delivery_daemon.reference.demo.report`): 0 only if each session reached the buyer's side exactly once with
every key.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
import time
from pathlib import Path
from typing import TextIO

from delivery_daemon.compose import create_app, default_marketplaces
from delivery_daemon.config import parse_settings
from delivery_daemon.generators.discovery import discover
from delivery_daemon.http.serving import serve
from delivery_daemon.logs import configure_logging
from delivery_daemon.reference.demo import PRODUCTS, TEMPLATE, Row, follow, report, say
from delivery_daemon.reference.demo_webhooks import Buyer
from delivery_daemon.reference.standard_webhooks import SellerSystem, new_secret
from delivery_daemon.reference.stripe_checkout import StripeCheckoutAccount

RETRIES = (0.3, 1.0, 2.0, 5.0)
"""The demo account's retry delays (seconds): Stripe's own are minutes to days."""


async def run_checkout_demo(orders: int = 6, stream: TextIO | None = None, deadline_s: float = 60.0) -> int:
    """Run the demo; 0 if every session was delivered exactly once with all its keys."""
    stream = stream or sys.stdout
    configure_logging("console", "error", stream=sys.stderr)  # the table is the output; errors still show
    account = StripeCheckoutAccount(retry_delays=RETRIES)
    prices = {name: account.price(f"prod_{name}") for name in PRODUCTS}
    seller = SellerSystem(new_secret(), answers=[503])  # one retry, to show the machinery
    with tempfile.TemporaryDirectory(prefix="delivery-daemon-demo-") as tmp:
        async with serve(account.app) as stripe_server, serve(seller.app) as seller_server:
            settings = parse_settings(
                {
                    "database": {"url": f"sqlite:///{Path(tmp) / 'demo.db'}"},
                    "delivery": {"retry_schedule": [0.3, 1, 2, 5], "timeout": 5},
                    "worker": {"poll_interval": 0.2},
                    "security": {"allowed_networks": ["127.0.0.1/32"]},  # the seller's endpoint is on loopback
                    "stores": [
                        account.store(
                            "demo",
                            stripe_server.url,
                            f"{seller_server.url}/hooks/orders",
                            seller.secret,
                            {
                                f"prod_{name}": {"generator": "pattern", "options": options, "template": TEMPLATE}
                                for name, options in PRODUCTS.items()
                            },
                        )
                    ],
                },
                environ={},
            )
            app = create_app(settings, marketplaces=default_marketplaces(), plugins=discover())
            async with serve(app) as daemon_server:
                account.endpoint = f"{daemon_server.url}/webhooks/demo"
                say(
                    stream,
                    f"stripe-checkout: the reference Stripe account at {stripe_server.url} sends signed events to the "
                    f"daemon at {daemon_server.url}; it delivers by webhook to {seller_server.url}/hooks/orders",
                )
                say(stream, "every third session has two products; the second pays later (a delayed method)")
                pump = asyncio.create_task(_pump(account))
                try:
                    rows = await _place(account, prices, orders)
                    await follow(rows, Buyer(seller, None).refresh, stream, deadline_s)
                finally:
                    pump.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await pump
    return report(rows, stream, title="delivery-daemon demo: stripe-checkout")


async def _pump(account: StripeCheckoutAccount) -> None:
    """Stripe's side: send every event whose attempt is due, as long as the demo runs."""
    while True:
        await account.deliver_due()
        await asyncio.sleep(0.05)


async def _place(account: StripeCheckoutAccount, prices: dict[str, str], orders: int) -> list[Row]:
    names = list(PRODUCTS)
    rows: list[Row] = []
    delayed = None
    for index in range(orders):
        first, other = names[index % len(names)], names[(index + 1) % len(names)]
        lines = [(first, 1 + index % 3)] + ([(other, 1)] if index % 3 == 2 else [])
        session, _ = account.checkout(
            [(prices[name], quantity) for name, quantity in lines], payment="unpaid" if index == 1 else "paid"
        )
        delayed = session if index == 1 else delayed
        product = "+".join(name for name, _ in lines)
        rows.append(Row(session.id, product, sum(q for _, q in lines), time.time(), channel="webhook"))
    if delayed is not None:
        await asyncio.sleep(0.5)  # the bank debit clears
        account.settle(delayed)
    return rows
