"""The chaos run for the marketplaces that only *send* signed webhooks: Sellix, Shoppy, Stripe-based stores,
Standard Webhooks platforms and Lemon Squeezy (whose orders API also runs: :mod:`.lemonsqueezy`).

These marketplaces have no delivery API: the daemon delivers through the ``webhook`` channel to the seller's own
endpoint, so that is where the faults go. The pieces:

* :class:`~delivery_daemon.reference.chaos.flavours.Flavour` — how one marketplace words and signs a paid-order
  webhook. A resend is the same body (the same event), signed again where the signature carries a timestamp.
* :class:`SignedSender` — the marketplace side: sends each order's webhook until the daemon answers 2xx, and
  *forged* ones (the same shape, signed with a secret that is not the store's) that must be refused and never lead
  to a delivery: no one who is not the marketplace can get a key.
* :class:`ChaosSink` — the seller's endpoint: checks each delivery's Standard Webhooks signature, records it, and
  fails a share of them (5xx, connection dropped, answered late, down for a stretch). Like any Standard Webhooks
  receiver it deduplicates on ``webhook-id``: a delivery of an order it already processed is answered 2xx and
  recorded as a redelivery, not as a second acceptance.
* Sellix only: a :class:`~delivery_daemon.reference.sellix_shop.SellixShop` lists every paid order, a share of them
  is never announced ("webhook never sent"), and ``delivery-daemon reconcile`` at the end must queue them so that
  they are delivered like the rest.
* :func:`judge_sink` — the verdict from the sink's record: every paid order accepted exactly once, every attempt
  for an order the same bytes, the right number of keys, no key on two orders, no forged order delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import random
import secrets
import signal
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import yaml
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from delivery_daemon.config import whsec_key
from delivery_daemon.errors import WebhookRejected
from delivery_daemon.http.serving import serve
from delivery_daemon.net.signatures import verify_standard
from delivery_daemon.reference.chaos import lemonsqueezy as ls
from delivery_daemon.reference.chaos.database import wait_settled
from delivery_daemon.reference.chaos.flavours import FLAVOURS, Flavour
from delivery_daemon.reference.chaos.harness import (
    PRODUCT,
    STORE,
    Announcer,
    ChaosFaults,
    ChaosOptions,
    DaemonProcess,
    daemon_config,
    kill_at_random,
    later,
    outage,
    place_all,
    reconcile,
    restart_port,
)
from delivery_daemon.reference.chaos.refunds import Refunder, judge_refunds, wait_delivered
from delivery_daemon.reference.chaos.verdict import Seen, Verdict, check_database, check_log, check_orders
from delivery_daemon.reference.drop import DroppableApp, drop_connection
from delivery_daemon.reference.faults import Faults
from delivery_daemon.reference.sellix_shop import SellixShop
from delivery_daemon.reference.standard_webhooks import new_secret

SINK_PATH = "/hooks/orders"


@dataclass
class SignedSender(Announcer):
    """The marketplace side of a webhook-only marketplace, sending through one pooled client."""

    flavour: Flavour
    url: str
    secret: str
    client: httpx.AsyncClient
    product_id: str
    bodies: dict[str, bytes] = field(default_factory=dict)
    quantities: dict[str, int] = field(default_factory=dict)
    forged_answers: list[int] = field(default_factory=list)
    resent: int = 0
    later: list[str] = field(default_factory=list)
    shop: SellixShop | None = None
    """Sellix only: the shop whose ``GET /orders`` lists every paid order placed (for the watchdog)."""
    never_sent: list[str] = field(default_factory=list)

    def place(self, quantity: int, *, listed: bool = False) -> str:
        """A new paid order (its webhook body is fixed now, so every resend is the same event); ``listed`` puts it
        in the shop's order list too, when there is one."""
        order_id = self.flavour.new_order_id()
        message = self.flavour.message(order_id, self.product_id, quantity)
        self.bodies[order_id] = json.dumps(message, separators=(",", ":")).encode()
        self.quantities[order_id] = quantity
        if listed and self.shop is not None:
            self.shop.orders.append({**message["data"], "created_at": int(time.time())})
        return order_id

    async def _post(self, order_id: str, secret: str) -> httpx.Response:
        return await self.post_body(secret, self.bodies[order_id], order_id)

    async def post_body(self, secret: str, body: bytes, order_id: str = "") -> httpx.Response:
        """POST ``body`` signed with ``secret`` (e.g. a refund: :mod:`~delivery_daemon.reference.chaos.refunds`)."""
        headers = {"Content-Type": "application/json", **self.flavour.sign(secret, order_id, body)}
        return await self.client.post(self.url, content=body, headers=headers)

    async def send(self, order_id: str) -> httpx.Response:
        return await self._post(order_id, self.secret)

    async def forge(self, quantity: int) -> str:
        """An order no one paid for, signed with a wrong secret; its answers are kept in ``forged_answers``."""
        order_id = self.place(quantity)
        del self.quantities[order_id]
        with contextlib.suppress(httpx.HTTPError):
            self.forged_answers.append((await self._post(order_id, self.flavour.new_secret())).status_code)
        return order_id


@dataclass
class Attempt:
    """One delivery the sink received: its exact bytes, its ``webhook-id``, the status it answered (0: dropped), and
    whether it was a redelivery (the ``webhook-id`` of a message already processed)."""

    body: bytes
    status: int = 0
    redelivery: bool = False
    msg_id: str = ""

    @property
    def accepted(self) -> bool:
        return 200 <= self.status < 300 and not self.redelivery


class ChaosSink:
    """The seller's endpoint for the ``webhook`` channel, failing a share of deliveries as ``faults`` draws them."""

    def __init__(self, secret: str, faults: Faults) -> None:
        self.key = whsec_key(secret)
        self.faults = faults
        self.attempts: defaultdict[str, list[Attempt]] = defaultdict(list)
        self.rejected = 0
        self.revoked: defaultdict[str, list[bytes]] = defaultdict(list)  # order.revoked bodies, by order
        self.during: Callable[[str], Awaitable[None]] | None = None  # before answering an order's first delivery
        self.app = DroppableApp(routes=[Route(SINK_PATH, self._receive, methods=["POST"])])

    async def _receive(self, request: Request) -> Response:
        body = await request.body()
        if self.faults.is_down:
            self.faults.note_down()
            return JSONResponse({"error": "down"}, status_code=503)
        try:
            msg_id = verify_standard(request.headers, body, [self.key], time.time(), 300)
            message = json.loads(body)
            order_id = str(message["data"]["order_id"])
        except (WebhookRejected, ValueError, KeyError, TypeError):
            self.rejected += 1
            return JSONResponse({"error": "bad delivery"}, status_code=400)
        if message.get("type") == "order.revoked":
            self.revoked[order_id].append(body)
            return JSONResponse({"ok": True})
        if self.during is not None and not self.attempts[order_id]:
            await self.during(order_id)  # e.g. the marketplace refunds the order while this delivery is in flight
        attempts = self.attempts[order_id]
        # Deduplicated on webhook-id, as a Standard Webhooks receiver does: the same order under another id would be
        # processed again, and is counted as a second acceptance (a duplicate).
        attempt = Attempt(body, msg_id=msg_id, redelivery=any(a.accepted and a.msg_id == msg_id for a in attempts))
        attempts.append(attempt)
        fault = None if attempt.redelivery else self.faults.take_delivery_fault()
        if fault is not None and fault.kind == "fail":
            attempt.status = fault.status
            return JSONResponse({"error": "injected"}, status_code=fault.status)
        if fault is not None and fault.kind == "drop":
            await drop_connection(request)
            return Response(status_code=500)  # never sent: the connection is gone
        # Processed now (a slow answer may reach the daemon after its timeout, so it delivers again: a redelivery).
        attempt.status = 200
        if fault is not None and fault.kind == "slow":
            await asyncio.sleep(fault.seconds)
        return JSONResponse({"ok": True})

    def delivered(self, order_id: str) -> bool:
        return any(a.accepted for a in self.attempts.get(order_id, ()))


def judge_sink(
    sink: ChaosSink,
    *,
    paid: Mapping[str, int],
    forged: Sequence[str],
    forged_answers: Sequence[int],
    kills: int,
    resent: int,
    refunded: frozenset[str] = frozenset(),
) -> Verdict:
    """Check the promises against the seller endpoint's record; ``paid`` maps order id to quantity, ``refunded``
    are those refunded during their delivery (judged by :func:`~.refunds.judge_refunds` instead)."""
    verdict = Verdict(
        orders=len(paid) + len(forged),
        kills=kills,
        faults=sum(sink.faults.injected.values()),
        resent=resent,
        unpaid=len(forged),
    )
    bad = verdict.violations
    check_orders(
        verdict,
        {
            order_id: (
                quantity,
                [Seen(a.accepted, a.body.decode(), partial(_keys, a.body)) for a in sink.attempts.get(order_id, [])],
            )
            for order_id, quantity in paid.items()
            if order_id not in refunded
        },
    )
    deliveries = {o: [(a.accepted, a.body) for a in sink.attempts.get(o, [])] for o in refunded}
    judge_refunds(verdict, set(refunded), deliveries, sink.revoked)
    for order_id in forged:
        if sink.attempts.get(order_id):
            bad.append(f"order {order_id}: forged webhook, yet delivered")
    accepted_forgeries = [status for status in forged_answers if status < 400]
    if accepted_forgeries:
        bad.append(f"{len(accepted_forgeries)} forged webhooks were not refused (answers {accepted_forgeries})")
    return verdict


def _keys(body: bytes) -> list[str]:
    return [str(key) for key in json.loads(body)["data"]["keys"]]


def delivered_keys(sink: ChaosSink) -> set[str]:
    """Every key the sink received (for the log check: none may appear in the daemon's log)."""
    return {key for attempts in sink.attempts.values() for a in attempts for key in _keys(a.body)}


__all__ = [
    "FLAVOURS",
    "SINK_PATH",
    "Attempt",
    "ChaosSink",
    "Flavour",
    "SignedSender",
    "delivered_keys",
    "judge_sink",
    "run_webhook_chaos",
]


async def run_webhook_chaos(
    options: ChaosOptions,
    marketplace: str,
    rng: random.Random,
    workdir: Path,
    say: Callable[[str], None],
    *,
    flavour: Flavour | None = None,
    store: Mapping[str, Any] | None = None,
) -> Verdict:
    """One chaos run for a webhook-only ``marketplace`` (a key of :data:`FLAVOURS`, else its ``flavour`` given, with
    ``store`` settings it needs besides the secret: e.g. the API of a reference the caller serves, as for Paddle)."""
    flavour = flavour or FLAVOURS[marketplace]
    started = time.monotonic()
    deadline = started + options.timeout
    webhook_secret, sink_secret = flavour.new_secret(), new_secret()
    faults = ChaosFaults(rng, options.fail, options.drop, options.slow)
    sink = ChaosSink(sink_secret, faults)
    port = restart_port()  # kept across restarts
    daemon_url = f"http://127.0.0.1:{port}"
    client = httpx.AsyncClient(timeout=30.0, limits=httpx.Limits(max_connections=64))
    api = flavour.api(webhook_secret) if flavour.api else None
    # Sellix lists its orders: some are never announced, and the watchdog (reconcile at the end) must deliver them.
    shop = SellixShop(secrets.token_hex(24), page_size=100) if flavour.name == "sellix" else None
    async with (
        serve(sink.app) as running,
        client,
        serve((shop or sink).app) as shop_server,
        ls.serve_api(api) as api_store,
    ):
        config = daemon_config(workdir, port, "http://127.0.0.1:1")
        config["security"] = {"allow_private_networks": True}  # the sink (and the Sellix shop) are on loopback
        listing = {"api_url": shop_server.url, "api_key": "${CHAOS_API_KEY}"} if shop is not None else {}
        config["stores"][0] = {
            **{k: v for k, v in config["stores"][0].items() if k not in ("api_url", "api_key")},
            **listing,
            "marketplace": flavour.name,
            "webhook_secret": "${CHAOS_WEBHOOK_SECRET}",
            "delivery": {
                "channel": "webhook",
                "webhook": {"url": f"{running.url}{SINK_PATH}", "secret": "${CHAOS_SINK_SECRET}"},
            },
            **api_store,
            **(store or {}),
        }
        (workdir / "daemon.yaml").write_text(yaml.safe_dump(config))
        env = {**os.environ, "CHAOS_WEBHOOK_SECRET": webhook_secret, "CHAOS_SINK_SECRET": sink_secret}
        if shop is not None:
            env["CHAOS_API_KEY"] = shop.api_key
        daemon = DaemonProcess(workdir / "daemon.yaml", daemon_url, workdir / "daemon.log", env)
        await daemon.start()
        sent_as = dataclasses.replace(flavour, message=api.message) if api else flavour
        side = SignedSender(sent_as, f"{daemon_url}/webhooks/{STORE}", webhook_secret, client, PRODUCT, shop=shop)
        refunder = Refunder(flavour.name, options.refund, rng, partial(side.post_body, webhook_secret))
        sink.during = refunder.during
        window = options.orders / options.rate
        background = [
            asyncio.create_task(later(rng.uniform(0.2, 0.8) * window, lambda: outage(faults, options.down_for))),
            asyncio.create_task(kill_at_random(daemon, options.kills, window, rng)),
        ]
        forged = await _place(options, side, rng, deadline)
        say(
            f"chaos: {options.orders} orders placed, all but {len(side.never_sent)} announced and acknowledged "
            f"at {time.monotonic() - started:.1f} s"
        )
        await side.resend(side.later[::-1])
        for task in background:
            await task
        faults.calm()
        say(f"chaos: kills and outage done at {time.monotonic() - started:.1f} s")
        reconciled = 0 if shop is None else await reconcile(workdir / "daemon.yaml", env, workdir / "reconcile.log")
        await wait_delivered(sink.delivered, list(side.quantities), refunder.refunded, sink.revoked, deadline)
        await wait_settled(workdir / "chaos.db", deadline)
        await asyncio.sleep(0.5)  # a late duplicate delivery would land in this window
        exit_status = await daemon.stop()
    verdict = judge_sink(
        sink,
        paid=side.quantities,
        forged=forged,
        forged_answers=side.forged_answers,
        kills=daemon.kills,
        resent=side.resent,
        refunded=frozenset(refunder.refunded),
    )
    verdict.never_sent = len(side.never_sent)
    if reconciled != 0:
        verdict.violations.append(f"reconcile exited with {reconciled}; see {workdir / 'reconcile.log'}")
    check_database(verdict, workdir / "chaos.db")
    check_log(verdict, daemon.log, {webhook_secret, sink_secret, *delivered_keys(sink), *(api.secrets if api else ())})
    if exit_status not in (0, -signal.SIGTERM):
        verdict.violations.append(f"the daemon exited with {exit_status} on SIGTERM")
    return verdict


async def _place(options: ChaosOptions, side: SignedSender, rng: random.Random, deadline: float) -> list[str]:
    """Place the run's orders (and its forged ones); returns the forged order ids."""
    forged: list[str] = []

    async def place() -> str | None:
        if rng.random() < options.unpaid:
            forged.append(await side.forge(rng.randint(1, 3)))
            return None
        order_id = side.place(rng.randint(1, 3), listed=True)
        if side.shop is not None and rng.random() < options.never_sent:
            side.never_sent.append(order_id)  # paid and listed, its webhook never sent
            return None
        return order_id

    await place_all(options, side, rng, deadline, place)
    return forged
