"""The chaos run for Paddle Billing: the webhook-only run (:mod:`.webhooks`) with the reference Paddle's API served
beside it, since the Paddle adapter reads every transaction back (``GET /transactions/{id}``) before delivering.

Each order is a transaction placed at the reference Paddle and notified as ``transaction.completed`` with an
``event_id`` of its own, signed with ``Paddle-Signature`` afresh on every resend (as Paddle retries); a forged one is
signed with a secret that is not the store's. The verdict is the webhook run's: every paid order delivered exactly
once to the failing seller endpoint, no forged order delivered, no secret or key in the log.
"""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from delivery_daemon.http.serving import serve
from delivery_daemon.net.signatures import paddle_header
from delivery_daemon.reference.chaos.harness import ChaosOptions
from delivery_daemon.reference.chaos.verdict import Verdict
from delivery_daemon.reference.chaos.webhooks import Flavour, run_webhook_chaos
from delivery_daemon.reference.paddle import PaddleBilling, new_id


def _sign(secret: str, _order_id: str, body: bytes) -> dict[str, str]:
    return {"Paddle-Signature": paddle_header([secret], body, int(time.time()))}


def paddle_flavour(billing: PaddleBilling) -> Flavour:
    """Paddle Billing's paid-order webhook, for transactions placed at ``billing``."""

    def message(order_id: str, product_id: str, quantity: int) -> dict[str, object]:
        txn = billing.place(product_id, quantity, txn_id=order_id)
        return billing.completed(txn, event_id=f"evt_{order_id.removeprefix('txn_')}")

    return Flavour(
        "paddle",
        lambda: f"pdl_ntfset_01{secrets.token_hex(12)}_{secrets.token_urlsafe(24)}",
        lambda: new_id("txn"),
        message,
        _sign,
    )


async def run_paddle_chaos(
    options: ChaosOptions, rng: random.Random, workdir: Path, say: Callable[[str], None]
) -> Verdict:
    """One chaos run for a Paddle Billing store."""
    billing = PaddleBilling()
    async with serve(billing.app) as api:
        store = {"api_url": api.url, "api_key": billing.api_key}
        return await run_webhook_chaos(
            options, "paddle", rng, workdir, say, flavour=paddle_flavour(billing), store=store
        )
