"""The worker's commits per order: verification and content share one transaction; a failed generation keeps the
verification."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable

from sqlalchemy import event

from delivery_daemon.storage.models import JobState
from tests.e2e.test_e2e_softstore import wait_for
from tests.support.stack import PRODUCT, STORE, Stack

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
    its commit): a backlog of N orders takes fewer than 3 commits per order, about 2 (2.8 leaves room for claims that
    miss the batch on a busy machine: 2.5 of them did, with three test runs in parallel)."""
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
        assert used <= 2.8 * orders, used  # one commit each for claim, content, delivery would be 3 per order


async def test_a_webhook_goes_to_the_running_worker_without_a_claim(make_stack: MakeStack) -> None:
    """With a slot free, the receiver commits the job leased to its worker, which delivers it with no claim and no
    claim after it: three commits per order (the webhook, verify+content, the delivery), not four; and on SQLite
    every statement of that path runs prepared on the driver's cursor, none through SQLAlchemy's execution."""
    async with make_stack(worker={"poll_interval": 60}) as stack:
        worker, committer = stack.daemon.worker, stack.daemon.queue.committer
        started = committer.stats.transactions
        executed: list[str] = []
        event.listen(committer.engine, "before_execute", lambda _c, statement, *_a: executed.append(str(statement)))
        await worker.start()
        try:
            async with asyncio.timeout(30):  # the start's release of expired leases, then its first claim
                await wait_for(lambda: committer.stats.transactions == started + 2)
            executed.clear()
            for _ in range(3):
                before = committer.stats.transactions
                placed = await stack.market.place_order(PRODUCT, count=1)
                assert placed.webhook_status == 200
                async with asyncio.timeout(30):
                    await wait_for(lambda p=placed.id_order: stack.market.accepted(p) is not None)  # type: ignore[misc]  # default binds this loop's order
                    await wait_for(lambda: not worker.in_flight)
                assert committer.stats.transactions - before == 3
            assert executed == []
        finally:
            await worker.stop()
        job = await stack.job(placed.id_order)
        assert (job.state, job.lease_owner) == (JobState.DELIVERED.value, None)


async def test_a_webhook_waits_for_a_claim_when_every_slot_is_busy(make_stack: MakeStack) -> None:
    """A worker with no free slot is not handed the job: it is committed queued and claimed once a slot frees."""
    async with make_stack(worker={"concurrency": 1, "poll_interval": 60}) as stack:
        worker = stack.daemon.worker
        await worker.start()
        try:
            store = stack.daemon.stores[STORE]
            held = worker.reserve(store)  # the only slot, as a job in flight would hold it
            assert held is not None and worker.reserve(store) is None
            placed = await stack.market.place_order(PRODUCT, count=1)
            assert placed.webhook_status == 200
            assert (await stack.job(placed.id_order)).state == JobState.QUEUED.value
            held.release()
            async with asyncio.timeout(30):
                await wait_for(lambda: stack.market.accepted(placed.id_order) is not None)
        finally:
            await worker.stop()


async def test_a_handed_over_job_is_verified_while_its_webhook_commits(make_stack: MakeStack) -> None:
    """The marketplace is asked about the order once its row is inserted, while its commit is still in progress
    (the round trip overlaps it); the 2xx waits for the commit, and the order is verified once and delivered."""
    async with make_stack(worker={"poll_interval": 60}) as stack:
        worker, committer = stack.daemon.worker, stack.daemon.queue.committer
        started = committer.stats.transactions
        await worker.start()
        committing, proceed = threading.Event(), threading.Event()
        armed = [False]

        def hold_the_commit(_conn: object) -> None:  # on the database thread
            if armed[0]:
                armed[0] = False
                committing.set()
                proceed.wait(30)

        event.listen(stack.daemon.queue.engine, "commit", hold_the_commit)
        try:
            async with asyncio.timeout(30):  # the start's release and claim are committed: the next is the webhook's
                await wait_for(lambda: committer.stats.transactions == started + 2)
            armed[0] = True
            webhook = asyncio.create_task(stack.market.place_order(PRODUCT, count=1))
            async with asyncio.timeout(30):
                await wait_for(lambda: any("/orders/info/" in r.path for r in stack.market.requests))
            assert committing.is_set() and not webhook.done(), "asked only after the commit"
            proceed.set()
            placed = await webhook
            assert placed.webhook_status == 200
            async with asyncio.timeout(30):
                await wait_for(lambda: stack.market.accepted(placed.id_order) is not None)
            await stack.market.send_webhook(placed.id_order)  # a resend: a duplicate asks the marketplace nothing
        finally:
            proceed.set()
            await worker.stop()
            event.remove(stack.daemon.queue.engine, "commit", hold_the_commit)
        assert sum("/orders/info/" in r.path for r in stack.market.requests) == 1
        job = await stack.job(placed.id_order)
        assert job.received == 2
        steps = [(a.step, a.outcome) for a in await stack.daemon.queue.history(job.id)]
        assert steps[:2] == [("receive", "accepted"), ("verify", "ok")]
