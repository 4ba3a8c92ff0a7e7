"""The worker's commits per order: verification and content share one transaction; a failed generation keeps the
verification."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from delivery_daemon.storage.models import JobState
from tests.e2e.test_e2e_softstore import wait_for
from tests.support.stack import PRODUCT, Stack

MakeStack = Callable[..., contextlib.AbstractAsyncContextManager[Stack]]


async def test_delivered_order_takes_two_worker_commits(stack: Stack) -> None:
    """Claim aside, a delivered order costs two commits: verification + content together, then the delivery."""
    placed = await stack.market.place_order(PRODUCT, count=2)
    assert placed.webhook_status == 200
    committer = stack.daemon.queue.committer
    before = committer.stats.transactions
    assert await stack.drain() == 1
    # claim, verify+content, delivered, and the drain's last (empty) claims of jobs and of revocations
    assert committer.stats.transactions - before == 5
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


async def test_next_claim_shares_the_commit_of_the_last_outcome(make_stack: MakeStack) -> None:
    """With one slot, the claim of the next job is submitted with the previous job's final transition (not after
    its commit): a backlog of N orders takes about 2 commits per order, not 3 (2.5 leaves room for a claim that
    misses the batch on a busy machine)."""
    orders = 30
    async with make_stack(worker={"concurrency": 1, "poll_interval": 60}) as stack:
        placed = [await stack.market.place_order(PRODUCT, count=1) for _ in range(orders)]
        assert all(p.webhook_status == 200 for p in placed)
        worker, committer = stack.daemon.worker, stack.daemon.queue.committer
        before = committer.stats.transactions
        await worker.start()
        try:
            async with asyncio.timeout(60):
                await wait_for(lambda: stack.market.accepted(placed[-1].id_order) is not None)
        finally:
            await worker.stop()
        # start: release_expired, stop: release_owned; per order: verify+content, then delivered + next claim
        used = committer.stats.transactions - before - 2
        assert all(stack.market.accepted(p.id_order) is not None for p in placed)
        assert used <= 2.5 * orders, used  # one commit each for claim, content, delivery would be 3 per order
