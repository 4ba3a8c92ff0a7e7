"""The chaos run for a Virtual Stores shop: the shop's staff API failing (revoked tokens, 5xx on fulfil, late answers),
SIGKILLs, a failing seller endpoint; and the shop-side verdict (every delivered cart's order fulfilled exactly once)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from delivery_daemon.reference.chaos.harness import ChaosFaults, ChaosOptions
from delivery_daemon.reference.chaos.run import run_chaos
from delivery_daemon.reference.chaos.verdict import Verdict
from delivery_daemon.reference.chaos.virtual_stores import digital_keys, judge_shop
from delivery_daemon.reference.chaos.webhooks import Attempt, ChaosSink
from delivery_daemon.reference.standard_webhooks import new_secret
from delivery_daemon.reference.virtual_stores import VirtualStoresShop


@pytest.mark.timeout(240)
async def test_short_chaos_run_fulfils_every_delivered_cart_once(tmp_path: Path) -> None:
    """100 carts, 2 SIGKILLs, shop and seller faults, resent and forged events: each delivered and fulfilled once."""
    lines: list[str] = []
    options = ChaosOptions(orders=100, kills=2, rate=60, unpaid=0.05, workdir=tmp_path, marketplace="virtual-stores")
    verdict = await run_chaos(options, say=lines.append)
    assert verdict.violations == [], "\n".join(lines)
    assert verdict.kills == 2 and verdict.faults > 0 and verdict.resent > 0
    assert verdict.delivered == verdict.fulfilled == verdict.orders - verdict.unpaid > 75
    assert verdict.integrity == "ok" and verdict.unfinished == 0 and verdict.leaks == 0
    assert lines[0].startswith("chaos: virtual-stores, seed ") and "fulfilled=" in lines[-1]


def _accepted(order_id: str) -> Attempt:
    return Attempt(json.dumps({"data": {"order_id": order_id, "keys": ["K"]}}).encode(), 200)


def test_shop_verdict_names_each_broken_promise() -> None:
    """A delivered cart fulfilled twice or never, an undelivered one fulfilled, and a fulfilled forgery are reported."""
    shop = VirtualStoresShop()
    cart = [{"product_id": "ebook", "quantity": 2, "unit_price": "9.90"}, {"product_id": "mug", "quantity": 1}]
    once, twice, never, undelivered, forged = (shop.place_order(cart) for _ in range(5))
    sink = ChaosSink(new_secret(), ChaosFaults(random.Random(0), 0, 0, 0))
    for order in (once, twice, never):
        sink.attempts[order.payment_intent_id].append(_accepted(order.payment_intent_id))
    fulfilment = {"carrier": "digital", "tracking_number": "dd-1"}
    once.fulfilments, twice.fulfilments = [fulfilment], [fulfilment, fulfilment]
    undelivered.fulfilments, forged.fulfilments = [fulfilment], [fulfilment]
    verdict = Verdict(orders=5, kills=0, faults=0, resent=0)
    paid = {o.payment_intent_id: o for o in (once, twice, never, undelivered)}
    judge_shop(verdict, paid, [forged], sink)
    assert verdict.fulfilled == 1 and len(verdict.violations) == 4, verdict.violations
    assert any(f"{twice.id} ({twice.payment_intent_id}): fulfilled 2 times, delivered" in v for v in verdict.violations)
    assert any(f"{never.id}" in v and "fulfilled 0 times, delivered" in v for v in verdict.violations)
    assert any(f"{undelivered.id}" in v and "never delivered" in v for v in verdict.violations)
    assert any(f"{forged.id}: forged event, yet fulfilled" in v for v in verdict.violations)
    assert digital_keys(once) == 2  # the mug holds no key
