"""Refunds during delivery in the webhook chaos run (issue #24): the marketplace refunds a share of the paid orders
*while the daemon's delivery of that order is on the wire*, and the verdict checks what a refund promises.

:class:`Refunder` is called by the seller's endpoint (:class:`~delivery_daemon.reference.chaos.webhooks.ChaosSink`)
when an order's first delivery arrives: for a drawn share of orders it sends the marketplace's refund webhook and
waits for the daemon's 2xx (resending the same event, as the marketplace does, across kills) before the endpoint
answers the delivery. :func:`judge_refunds` then requires, for every refunded order: at most one accepted delivery,
the same bytes on every attempt, and — if a delivery was accepted — an ``order.revoked`` event with exactly the
delivered keys. A refunded order that was never accepted was cancelled: not lost. Only marketplaces with a refund
event in :data:`REFUNDS` (Stripe) draw refunds.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import httpx

from delivery_daemon.reference.chaos.verdict import Verdict
from delivery_daemon.reference.stripe_store import charge_refunded
from delivery_daemon.reference.stripe_store import event as stripe_event

REFUNDS: dict[str, Callable[[str], dict[str, object]]] = {
    "stripe": lambda oid: stripe_event(
        "charge.refunded", charge_refunded(oid), event_id=f"evt_refund_{oid.removeprefix('pi_')}"
    ),
}
"""Per marketplace, its refund webhook's body for an order id."""


@dataclass
class Refunder:
    """Refunds a ``share`` of orders during their first delivery, through ``post(body) -> response``."""

    marketplace: str
    share: float
    rng: random.Random
    post: Callable[[bytes], Awaitable[httpx.Response]]
    refunded: set[str] = field(default_factory=set)
    tried: set[str] = field(default_factory=set)
    patience: float = 30.0

    async def during(self, order_id: str) -> None:
        """Called by the endpoint before it answers ``order_id``'s delivery: maybe refund it now (once per order)."""
        make = REFUNDS.get(self.marketplace)
        if make is None or order_id in self.tried:
            return
        self.tried.add(order_id)
        if self.rng.random() >= self.share:
            return
        body = json.dumps(make(order_id), separators=(",", ":")).encode()
        until = time.monotonic() + self.patience
        while time.monotonic() < until:  # resent until answered, as the marketplace does (the daemon may be down)
            try:
                if (await self.post(body)).status_code < 300:
                    self.refunded.add(order_id)
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)


def judge_refunds(
    verdict: Verdict,
    refunded: set[str],
    deliveries: Mapping[str, Sequence[tuple[bool, bytes]]],
    revoked: Mapping[str, Sequence[bytes]],
) -> None:
    """Add the refunded orders' verdict: ``deliveries`` (order id -> (accepted, body) per attempt) and ``revoked``
    (order id -> the ``order.revoked`` bodies the endpoint accepted)."""
    bad = verdict.violations
    verdict.refunded = len(refunded)
    for order_id in sorted(refunded):
        attempts = deliveries.get(order_id, ())
        accepted = [body for ok, body in attempts if ok]
        if len({body for _ok, body in attempts}) > 1:
            verdict.mismatched += 1
            bad.append(f"order {order_id}: refunded, yet its attempts carried different contents")
        if len(accepted) > 1:
            verdict.duplicates += len(accepted) - 1
            bad.append(f"order {order_id}: refunded, {len(accepted)} deliveries accepted")
        if not accepted:
            continue  # cancelled before a delivery was accepted: nothing to take back
        verdict.refunded_accepted += 1
        keys = json.loads(accepted[0])["data"]["keys"]
        if not any(json.loads(body)["data"]["keys"] == keys for body in revoked.get(order_id, ())):
            bad.append(f"order {order_id}: refunded during its delivery, delivered, and its keys never revoked")


async def wait_delivered(
    delivered: Callable[[str], bool],
    paid: Sequence[str],
    refunded: set[str],
    revoked: Mapping[str, object],
    deadline: float,
) -> None:
    """Until ``deadline``: wait for every paid order to be delivered (a refunded one may be cancelled instead) and
    every refunded order that was delivered to have its ``order.revoked``."""
    while time.monotonic() < deadline:
        done = all(delivered(order_id) or order_id in refunded for order_id in paid)
        if done and all(revoked.get(order_id) for order_id in refunded if delivered(order_id)):
            return
        await asyncio.sleep(0.1)
