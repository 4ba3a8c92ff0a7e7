"""The chaos run for webhook-only marketplaces (Sellix, Shoppy, Stripe, Standard Webhooks, Lemon Squeezy) and its
sink's verdict."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from delivery_daemon.reference.chaos.harness import ChaosFaults, ChaosOptions
from delivery_daemon.reference.chaos.refunds import REFUNDS, judge_refunds
from delivery_daemon.reference.chaos.run import run_chaos
from delivery_daemon.reference.chaos.verdict import Verdict
from delivery_daemon.reference.chaos.webhooks import FLAVOURS, Attempt, ChaosSink, judge_sink
from delivery_daemon.reference.standard_webhooks import new_secret


@pytest.mark.timeout(180)
@pytest.mark.parametrize("marketplace", sorted(FLAVOURS))
async def test_short_chaos_run_per_marketplace(marketplace: str, tmp_path: Path) -> None:
    """100 orders, 2 SIGKILLs, a failing seller endpoint, resent and forged webhooks, (Sellix, which lists its
    orders) webhooks never sent, delivered by the watchdog, and (Stripe) refunds during delivery: each paid order
    once, each refunded one delivered at most once and then revoked, or cancelled."""
    lines: list[str] = []
    options = ChaosOptions(
        orders=100,
        kills=2,
        rate=60,
        unpaid=0.05,
        never_sent=0.1,
        refund=0.1,
        workdir=tmp_path,
        marketplace=marketplace,
    )
    verdict = await run_chaos(options, say=lines.append)
    assert verdict.violations == [], "\n".join(lines)
    assert verdict.kills == 2 and verdict.faults > 0 and verdict.resent > 0
    assert verdict.delivered + verdict.refunded == verdict.orders - verdict.unpaid > 75
    assert (verdict.refunded > 0) == (marketplace in REFUNDS)
    assert (verdict.never_sent > 0) is (marketplace == "sellix")  # delivered all the same, counted above
    assert verdict.integrity == "ok" and verdict.unfinished == 0 and verdict.leaks == 0
    assert lines[0].startswith(f"chaos: {marketplace}, seed ")


def _body(order_id: str, keys: list[str]) -> bytes:
    return json.dumps({"data": {"order_id": order_id, "keys": keys}}).encode()


def test_sink_verdict_names_each_broken_promise() -> None:
    """Lost, twice-accepted, changed-content and shared-key orders, and a delivered forgery are all reported."""
    sink = ChaosSink(new_secret(), ChaosFaults(random.Random(0), 0, 0, 0))
    sink.attempts["a"] += [Attempt(_body("a", ["K1"]), 500), Attempt(_body("a", ["K2"]), 200)]  # content changed
    sink.attempts["b"] += [
        Attempt(_body("b", ["K3"]), 200, msg_id="m1"),  # the same order under a second
        Attempt(_body("b", ["K3"]), 200, msg_id="m2"),
    ]  # webhook-id: processed twice
    sink.attempts["c"] += [Attempt(_body("c", ["K3"]), 200)]  # K3 already went to b
    sink.attempts["d"] += [Attempt(_body("d", ["K4"]), 200, redelivery=True)]  # a redelivery is not an acceptance
    sink.attempts["forged"] += [Attempt(_body("forged", ["K5"]), 200)]
    verdict = judge_sink(
        sink, paid={"a": 1, "b": 1, "c": 1, "d": 1}, forged=["forged"], forged_answers=[401, 200], kills=0, resent=0
    )
    assert (verdict.lost, verdict.duplicates, verdict.mismatched, verdict.reused_keys) == (1, 1, 1, 1)
    assert any("forged webhook, yet delivered" in v for v in verdict.violations)
    assert any("forged webhooks were not refused" in v for v in verdict.violations)


async def test_sink_deduplicates_on_webhook_id_only() -> None:
    """A resend under the same webhook-id is a redelivery; the same order under a new webhook-id is a duplicate."""
    import httpx

    from delivery_daemon.config import whsec_key
    from delivery_daemon.http.serving import serve
    from delivery_daemon.net.signatures import standard_headers

    secret = new_secret()
    sink = ChaosSink(secret, ChaosFaults(random.Random(0), 0, 0, 0))
    body = _body("o-1", ["K1"])
    async with serve(sink.app) as server, httpx.AsyncClient(base_url=server.url) as client:
        for msg_id in ("msg_a", "msg_a", "msg_b"):
            headers = standard_headers(whsec_key(secret), msg_id, int(time.time()), body)
            assert (await client.post("/hooks/orders", content=body, headers=headers)).status_code == 200
    assert [(a.msg_id, a.redelivery) for a in sink.attempts["o-1"]] == [
        ("msg_a", False),
        ("msg_a", True),
        ("msg_b", False),
    ]
    verdict = judge_sink(sink, paid={"o-1": 1}, forged=[], forged_answers=[], kills=0, resent=0)
    assert verdict.duplicates == 1


def test_refund_verdict_names_each_broken_promise() -> None:
    """A refunded order delivered and never revoked (or revoked with other keys), or accepted twice, is reported; one
    cancelled before any acceptance, or delivered once and revoked with its keys, is not."""
    verdict = Verdict(orders=5, kills=0, faults=0, resent=0)
    deliveries = {
        "cancelled": [(False, _body("cancelled", ["K0"]))],
        "revoked": [(True, _body("revoked", ["K1"]))],
        "kept": [(True, _body("kept", ["K2"]))],
        "other": [(True, _body("other", ["K3"]))],
        "twice": [(True, _body("twice", ["K4"])), (True, _body("twice", ["K4"]))],
    }
    revoked = {"revoked": [_body("revoked", ["K1"])], "other": [_body("other", ["K9"])], "twice": [_body("t", ["K4"])]}
    judge_refunds(verdict, set(deliveries), deliveries, revoked)
    assert (verdict.refunded, verdict.refunded_accepted, verdict.duplicates) == (5, 4, 1)
    assert sorted(v.split(":")[0] for v in verdict.violations) == ["order kept", "order other", "order twice"]
