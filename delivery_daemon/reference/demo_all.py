"""``delivery-daemon demo --marketplace NAME`` and ``--all``: picks each marketplace's demo.

Only names at import time: the CLI builds its parser from :data:`MARKETPLACES` on every command, and the demos
import the whole daemon, so they are imported when one runs.
"""

from __future__ import annotations

import sys
from typing import TextIO

MARKETPLACES = (
    "softstore",
    "sellix",
    "shoppy",
    "stripe",
    "stripe-checkout",
    "standard-webhooks",
    "lemonsqueezy",
    "polar",
    "paddle",
    "virtual-stores",
    "gumroad",
    "sellauth",
)


async def run_marketplace_demo(marketplace: str, orders: int = 6, stream: TextIO | None = None) -> int:
    """The demo of one of :data:`MARKETPLACES`; 0 if every order was delivered exactly once."""
    if marketplace == "softstore":
        from delivery_daemon.reference.demo import run_demo  # the demos load the daemon: see the module docstring

        return await run_demo(orders=orders, stream=stream, title="delivery-daemon demo: softstore")
    if marketplace == "paddle":
        from delivery_daemon.reference.demo_paddle import run_paddle_demo  # likewise

        return await run_paddle_demo(orders=orders, stream=stream)
    if marketplace == "stripe-checkout":
        from delivery_daemon.reference.demo_stripe_checkout import run_checkout_demo  # likewise

        return await run_checkout_demo(orders=orders, stream=stream)
    if marketplace == "virtual-stores":
        from delivery_daemon.reference.demo_virtual_stores import run_virtual_stores_demo  # likewise

        return await run_virtual_stores_demo(orders=orders, stream=stream)
    from delivery_daemon.reference.demo_webhooks import run_webhook_demo  # likewise

    return await run_webhook_demo(marketplace, orders=orders, stream=stream)


async def run_all_demos(orders: int = 6, stream: TextIO | None = None) -> int:
    """Every marketplace's demo in turn; 0 only if each of them passed."""
    from delivery_daemon.reference.demo import say  # likewise

    stream = stream or sys.stdout
    failed = []
    for index, marketplace in enumerate(MARKETPLACES):
        if index:
            say(stream, "")
        if await run_marketplace_demo(marketplace, orders, stream) != 0:
            failed.append(marketplace)
    say(stream, "")
    if failed:
        say(stream, f"{len(failed)} of {len(MARKETPLACES)} demos failed: {', '.join(failed)}")
        return 1
    say(stream, f"all {len(MARKETPLACES)} marketplaces' demos delivered every order exactly once")
    return 0
