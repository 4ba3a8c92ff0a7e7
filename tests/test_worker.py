"""The worker's commits per order: verification and content share one transaction; a failed generation keeps the
verification."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from delivery_daemon.models import JobState
from tests.conftest import PRODUCT, Stack

MakeStack = Callable[..., contextlib.AbstractAsyncContextManager[Stack]]


async def test_delivered_order_takes_two_worker_commits(stack: Stack) -> None:
    """Claim aside, a delivered order costs two commits: verification + content together, then the delivery."""
    placed = await stack.market.place_order(PRODUCT, count=2)
    assert placed.webhook_status == 200
    committer = stack.daemon.queue.committer
    before = committer.stats.transactions
    assert await stack.drain() == 1
    # claim, verify+content, delivered, and the drain's last (empty) claim
    assert committer.stats.transactions - before == 4
    job = await stack.job(placed.id_order)
    assert (job.state, job.quantity) == (JobState.DELIVERED.value, 2)
    steps = [a.step for a in await stack.daemon.queue.history(job.id)]
    assert steps == ["receive", "verify", "generate", "deliver"]


async def test_failed_generation_keeps_what_the_marketplace_confirmed(make_stack: MakeStack) -> None:
    """An order that waits for stock has its verified quantity stored: the retry does not ask the marketplace again."""
    async with make_stack(products={"serials": {"generator": "stock"}}) as stack:
        stack.market.add_product("serials", count=10)
        placed = await stack.market.place_order("serials", count=3)
        assert placed.webhook_status == 200
        await stack.drain()
        job = await stack.job(placed.id_order)
        assert (job.state, job.quantity, job.content) == (JobState.WAITING.value, 3, None)
        steps = [(a.step, a.outcome) for a in await stack.daemon.queue.history(job.id)]
        assert steps == [("receive", "accepted"), ("verify", "ok"), ("generate", "out_of_stock")]
