"""The chaos run for a Virtual Stores shop (``delivery-daemon chaos --marketplace virtual-stores``).

The reference shop (:class:`~delivery_daemon.reference.virtual_stores.VirtualStoresShop`) runs in this process behind
:class:`ShopChaos`, which fails its staff API as a real one fails: every token revoked every few seconds (the next
request answers 401, the refresh is refused, the daemon logs in again), a share of fulfil calls answered 5xx, and a
share of answers sent late, after the request was carried out (some past the daemon's timeout, so it tries again
what the shop already did). Each order is a cart of one or two digital products, sometimes with a physical one; its
Stripe event is announced until the daemon acknowledges it, some are resent, and some are forged (signed with a
secret that is not the store's). The daemon delivers through the ``webhook`` channel to the failing seller endpoint
of :mod:`.webhooks` (:class:`~.webhooks.ChaosSink`) and is SIGKILLed at random.

The verdict is the sink's (:func:`~.webhooks.judge_sink`: each paid cart delivered once with all its digital keys,
identical bytes on every attempt, no key on two orders, no forgery delivered), the database's, the log's (no
password, token, webhook secret or key), and the shop's own record (:func:`judge_shop`): the shop order of every
delivered job fulfilled exactly once, and no other order fulfilled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from starlette.responses import JSONResponse
from starlette.types import Message, Receive, Scope, Send

from delivery_daemon.http.serving import serve
from delivery_daemon.net.signatures import stripe_header
from delivery_daemon.reference.chaos.database import wait_settled
from delivery_daemon.reference.chaos.harness import (
    STORE,
    Announcer,
    ChaosFaults,
    ChaosOptions,
    DaemonProcess,
    daemon_config,
    every,
    kill_at_random,
    later,
    outage,
    place_all,
    restart_port,
)
from delivery_daemon.reference.chaos.verdict import Verdict, check_database, check_log
from delivery_daemon.reference.chaos.webhooks import SINK_PATH, ChaosSink, delivered_keys, judge_sink
from delivery_daemon.reference.standard_webhooks import new_secret
from delivery_daemon.reference.virtual_stores import STAFF_EMAIL, ShopOrder, VirtualStoresShop

DIGITAL = {"ebook": "EBOOK-XXXXX-XXXXX-XXXXX", "game:deluxe": "GAME-XXXXX-XXXXX-XXXXX"}
"""The store's products (key: the shop's ``product_id[:variant_id]``) and each one's key pattern."""


class ShopChaos:
    """An ASGI wrapper around the shop's app injecting its faults (see the module docstring); ``injected`` counts
    them by kind."""

    def __init__(self, shop: VirtualStoresShop, rng: random.Random, fail: float, slow: float) -> None:
        self.shop, self.rng = shop, rng
        self.rates = (fail, slow)
        self.injected: Counter[str] = Counter()

    def expire_tokens(self) -> None:
        """Every token the shop issued is revoked: the daemon's next request answers 401."""
        self.shop.faults.expire_tokens = True
        self.injected["tokens_revoked"] += 1

    def calm(self) -> None:
        self.rates = (0.0, 0.0)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.shop.app(scope, receive, send)
        fail, slow = self.rates
        if str(scope["path"]).endswith("/fulfill") and self.rng.random() < fail:
            self.injected["fulfil_5xx"] += 1
            status = self.rng.choice((500, 502, 503))
            return await JSONResponse({"detail": "injected"}, status_code=status)(scope, receive, send)
        delay = self.rng.uniform(0.2, 1.6) if self.rng.random() < slow else 0.0
        if delay:
            self.injected["slow_answer"] += 1

        async def answer_late(message: Message) -> None:
            # The shop has done the work by the time it starts its answer: a timeout leaves it done.
            if delay and message["type"] == "http.response.start":
                await asyncio.sleep(delay)
            await send(message)

        await self.shop.app(scope, receive, answer_late)


def cart(rng: random.Random) -> list[dict[str, Any]]:
    """One or both digital products (1 to 3 of the e-book), and half the time a mug the shop ships itself."""
    items: list[dict[str, Any]] = []
    if rng.random() < 0.8:
        items.append({"product_id": "ebook", "quantity": rng.randint(1, 3), "unit_price": "9.90"})
    if not items or rng.random() < 0.5:
        items.append({"product_id": "game", "variant_id": "deluxe", "quantity": 1, "unit_price": "30.00"})
    if rng.random() < 0.5:
        items.append({"product_id": "mug", "quantity": 1, "unit_price": "12.50"})
    return items


def digital_keys(order: ShopOrder) -> int:
    """How many keys the order's delivery must hold: its digital items' quantities."""
    return sum(int(item["quantity"]) for item in order.items if _product_key(item) in DIGITAL)


def _product_key(item: dict[str, Any]) -> str:
    return f"{item['product_id']}:{item['variant_id']}" if item.get("variant_id") else str(item["product_id"])


@dataclass
class ShopSide(Announcer):
    """The shop's Stripe account: sends each order's ``payment_intent.succeeded`` (the same event on every resend,
    signed again) until the daemon answers 2xx, and forged ones the daemon must refuse."""

    shop: VirtualStoresShop
    url: str
    client: httpx.AsyncClient
    bodies: dict[str, bytes] = field(default_factory=dict)  # PaymentIntent id -> the event
    paid: dict[str, ShopOrder] = field(default_factory=dict)
    forged: dict[str, ShopOrder] = field(default_factory=dict)
    forged_answers: list[int] = field(default_factory=list)
    resent: int = 0
    later: list[str] = field(default_factory=list)

    def place(self, rng: random.Random) -> str:
        order = self.shop.place_order(cart(rng))
        event = self.shop.paid_event(order)
        event["id"] = f"evt_{order.payment_intent_id.removeprefix('pi_')}"  # Stripe resends the same event
        self.bodies[order.payment_intent_id] = json.dumps(event, separators=(",", ":")).encode()
        self.paid[order.payment_intent_id] = order
        return order.payment_intent_id

    async def _post(self, payment: str, secret: str) -> httpx.Response:
        body = self.bodies[payment]
        headers = {
            "Content-Type": "application/json",
            "Stripe-Signature": stripe_header([secret], body, int(time.time())),
        }
        return await self.client.post(self.url, content=body, headers=headers)

    async def send(self, order_id: str) -> httpx.Response:
        return await self._post(order_id, self.shop.webhook_secret)

    async def forge(self, rng: random.Random) -> None:
        """A paid order's event signed with a wrong secret: refused, never delivered, its order never fulfilled."""
        payment = self.place(rng)
        self.forged[payment] = self.paid.pop(payment)
        with contextlib.suppress(httpx.HTTPError):
            self.forged_answers.append((await self._post(payment, f"whsec_{new_secret()}")).status_code)


def judge_shop(verdict: Verdict, paid: dict[str, ShopOrder], forged: Iterable[ShopOrder], sink: ChaosSink) -> None:
    """The shop's record: every order delivered to the buyer fulfilled exactly once, no other order fulfilled."""
    verdict.fulfilled = 0
    for payment, order in paid.items():
        times = len(order.fulfilments)
        if sink.delivered(payment) and times == 1:
            verdict.fulfilled += 1
        elif sink.delivered(payment) or times:
            verdict.violations.append(
                f"shop order {order.id} ({payment}): fulfilled {times} times, "
                f"{'delivered' if sink.delivered(payment) else 'never delivered'}"
            )
    for order in forged:
        if order.fulfilments:
            verdict.violations.append(f"shop order {order.id}: forged event, yet fulfilled")


async def run_virtual_stores_chaos(
    options: ChaosOptions, rng: random.Random, workdir: Path, say: Callable[[str], None]
) -> Verdict:
    """One chaos run against the reference Virtual Stores shop."""
    started = time.monotonic()
    deadline = started + options.timeout
    shop = VirtualStoresShop()
    chaos = ShopChaos(shop, rng, options.fail, options.slow)
    sink_secret = new_secret()
    faults = ChaosFaults(rng, options.fail, options.drop, options.slow)
    sink = ChaosSink(sink_secret, faults)
    port = restart_port()  # kept across restarts
    daemon_url = f"http://127.0.0.1:{port}"
    client = httpx.AsyncClient(timeout=30.0, limits=httpx.Limits(max_connections=64))
    async with serve(chaos) as shop_server, serve(sink.app) as sink_server, client:
        config = daemon_config(workdir, port, shop_server.url)
        config["security"] = {"allow_private_networks": True}  # the shop and the sink are on loopback
        config["stores"][0] = {
            "name": STORE,
            "marketplace": "virtual-stores",
            "api_url": shop_server.url,
            "staff": {"email": STAFF_EMAIL, "password": "${CHAOS_STAFF_PASSWORD}"},
            "webhook_secret": "${CHAOS_WEBHOOK_SECRET}",
            "delivery": {
                "channel": "webhook",
                "webhook": {"url": f"{sink_server.url}{SINK_PATH}", "secret": "${CHAOS_SINK_SECRET}"},
            },
            "products": {
                key: {
                    "generator": "pattern",
                    "options": {"pattern": pattern},
                    "template": "Order {order_id}\n{keys_lines}",
                }
                for key, pattern in DIGITAL.items()
            },
        }
        (workdir / "daemon.yaml").write_text(yaml.safe_dump(config))
        env = {
            **os.environ,
            "CHAOS_STAFF_PASSWORD": shop.password,
            "CHAOS_WEBHOOK_SECRET": shop.webhook_secret,
            "CHAOS_SINK_SECRET": sink_secret,
        }
        daemon = DaemonProcess(workdir / "daemon.yaml", daemon_url, workdir / "daemon.log", env)
        await daemon.start()
        side = ShopSide(shop, f"{daemon_url}/webhooks/{STORE}", client)
        stop = asyncio.Event()
        window = options.orders / options.rate
        background = [
            asyncio.create_task(every(options.expire_every, chaos.expire_tokens, stop)),
            asyncio.create_task(later(rng.uniform(0.2, 0.8) * window, lambda: outage(faults, options.down_for))),
            asyncio.create_task(kill_at_random(daemon, options.kills, window, rng)),
        ]

        async def place() -> str | None:
            if rng.random() < options.unpaid:
                await side.forge(rng)
                return None
            return side.place(rng)

        await place_all(options, side, rng, deadline, place)
        say(f"chaos: {options.orders} orders placed and acknowledged at {time.monotonic() - started:.1f} s")
        await side.resend(side.later[::-1])
        for task in background[1:]:
            await task
        stop.set()
        await background[0]
        faults.calm()
        chaos.calm()
        say(f"chaos: kills, revoked tokens and outage done at {time.monotonic() - started:.1f} s")
        await _wait_done(sink, side.paid, deadline)
        await wait_settled(workdir / "chaos.db", deadline)
        await asyncio.sleep(0.5)  # a late duplicate delivery or fulfilment would land in this window
        exit_status = await daemon.stop()
    verdict = judge_sink(
        sink,
        paid={payment: digital_keys(order) for payment, order in side.paid.items()},
        forged=list(side.forged),
        forged_answers=side.forged_answers,
        kills=daemon.kills,
        resent=side.resent,
    )
    verdict.faults += sum(chaos.injected.values())
    judge_shop(verdict, side.paid, side.forged.values(), sink)
    check_database(verdict, workdir / "chaos.db")
    secrets = {shop.password, shop.webhook_secret, sink_secret, *shop.issued, *delivered_keys(sink)}
    check_log(verdict, daemon.log, secrets)
    if exit_status not in (0, -signal.SIGTERM):
        verdict.violations.append(f"the daemon exited with {exit_status} on SIGTERM")
    return verdict


async def _wait_done(sink: ChaosSink, paid: dict[str, ShopOrder], deadline: float) -> None:
    """Until every paid cart reached the sink and its shop order is fulfilled, or the deadline."""
    while time.monotonic() < deadline:
        if all(sink.delivered(payment) and order.fulfilments for payment, order in paid.items()):
            return
        await asyncio.sleep(0.1)
