"""The queue's multi-writer guarantees, on SQLite and on PostgreSQL (where several replicas share one database)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from delivery_daemon.clock import ManualClock
from delivery_daemon.order import IncomingOrder
from delivery_daemon.storage.engine import create_db_engine, create_schema
from delivery_daemon.storage.jobs import LeaseLost, MarkedOrder, OrderCancelled, Settled, Transition
from delivery_daemon.storage.models import JobState
from delivery_daemon.storage.operator import ActionRefused, Orders
from delivery_daemon.storage.queue import JobQueue
from delivery_daemon.storage.transitions import item_waiting


def order(n: int) -> IncomingOrder:
    return IncomingOrder(store="shop", marketplace="softstore", order_id=f"o{n}", product_id="p", payload={})


@pytest.fixture
async def queues(db_url: str) -> AsyncIterator[Callable[[], JobQueue]]:
    """Independent queues (own engine each, like separate replicas) on one migrated database, one shared clock."""
    clock = ManualClock()
    made: list[JobQueue] = []
    create_schema(create_db_engine(db_url))

    def make() -> JobQueue:
        queue = JobQueue(create_db_engine(db_url), clock)
        made.append(queue)
        return queue

    yield make
    for queue in made:
        queue.close()
        queue.engine.dispose()


async def test_concurrent_claims_never_overlap(queues: Callable[[], JobQueue]) -> None:
    """Three replicas claiming at once share 60 jobs out without giving any job to two of them."""
    replicas = [queues() for _ in range(3)]
    for n in range(60):
        await replicas[n % 3].enqueue(order(n))

    async def claim_all(queue: JobQueue, owner: str) -> list[int]:
        got: list[int] = []
        while batch := await queue.claim(owner, 30, 4):
            got += [job.id for job in batch if job.id is not None]
        return got

    claimed = await asyncio.gather(*(claim_all(q, f"r{i}") for i, q in enumerate(replicas)))
    flat = [job_id for part in claimed for job_id in part]
    assert len(flat) == 60
    assert len(set(flat)) == 60


async def test_same_order_on_two_replicas_is_one_job(queues: Callable[[], JobQueue]) -> None:
    """A webhook resent to another replica is counted, not queued twice."""
    a, b = queues(), queues()
    first, second = await asyncio.gather(a.enqueue(order(1)), b.enqueue(order(1)))
    assert first.job_id == second.job_id
    assert sorted([first.created, second.created]) == [False, True]
    job = await a.find("shop", "o1")
    assert job is not None and job.received == 2


async def test_expired_lease_is_released_once_and_fences_the_old_owner(queues: Callable[[], JobQueue]) -> None:
    """Every replica sweeping expired leases at once requeues a dead replica's job exactly once."""
    dead, *sweepers = [queues() for _ in range(3)]
    await dead.enqueue(order(1))
    [job] = await dead.claim("dead-replica", 30, 1)
    dead.clock.advance(31)  # type: ignore[attr-defined]  # the fixture's queues share a ManualClock
    released = await asyncio.gather(*(s.release_expired() for s in sweepers))
    assert sum(released) == 1
    history = await sweepers[0].history(job.id or 0)
    assert [a.outcome for a in history].count("expired") == 1
    [again] = await sweepers[0].claim("live-replica", 30, 1)
    assert again.id == job.id
    with pytest.raises(LeaseLost):
        await dead.transition(job, "dead-replica", Transition(JobState.DELIVERED, "deliver", "delivered"))


async def test_operator_requeue_is_one_transition_for_page_and_cli(queues: Callable[[], JobQueue]) -> None:
    """JobQueue.retry (status page) and Orders.retry (CLI) both requeue a dead job with attempts 0; a job another
    replica holds is refused by both."""
    queue = queues()
    for n in (1, 2, 3):
        await queue.enqueue(order(n))
    jobs = await queue.claim("w", 30, 3)
    dead = Transition(JobState.DEAD, "deliver", "failed", count_attempt=True)
    for job in jobs[:2]:
        await queue.transition(job, "w", dead)
    by_page, by_cli, leased = jobs
    assert by_page.id is not None and by_cli.id is not None and leased.id is not None
    assert await queue.retry(by_page.id) is True
    assert Orders(queue.engine, queue.clock).retry(by_cli.order_id).state == JobState.QUEUED.value
    for job_id in (by_page.id, by_cli.id):
        after = await queue.get(job_id)
        assert after is not None and (after.state, after.attempts, after.lease_owner) == ("queued", 0, None)
        last = (await queue.history(job_id))[-1]
        assert (last.step, last.outcome, last.state) == ("admin", "retry", "queued")
    assert await queue.retry(leased.id) is False
    with pytest.raises(ActionRefused):
        Orders(queue.engine, queue.clock).retry(leased.order_id)
    still = await queue.get(leased.id)
    assert still is not None and still.state == "running"


async def test_claim_leases_at_most_the_batch_size(queues: Callable[[], JobQueue]) -> None:
    """With hundreds of due jobs and replicas claiming at once, a claim of n leases at most n rows, and every
    leased row is one a claimer was handed (PostgreSQL may re-run a LIMITed subquery and lease more)."""
    replicas = [queues() for _ in range(4)]
    for n in range(3):  # first a tiny table, as the stock pool's was when its claim took the whole pool
        await replicas[0].enqueue(order(n))
    assert len(await replicas[0].claim("first", 30, 2)) == 2
    for n in range(3, 403):
        await replicas[0].enqueue(order(n))
    handed: list[int] = []

    async def claim_some(queue: JobQueue, owner: str) -> None:
        for _ in range(10):
            batch = await queue.claim(owner, 30, 3)
            assert len(batch) <= 3
            handed.extend(job.id for job in batch if job.id is not None)

    await asyncio.gather(*(claim_some(q, f"r{i}") for i, q in enumerate(replicas)))
    counts = await replicas[0].counts()
    assert len(handed) == len(set(handed)) == counts[JobState.RUNNING.value] - 2 == 120


async def test_concurrent_transitions_merge_and_fence_each_job(queues: Callable[[], JobQueue]) -> None:
    """Transitions waiting together run as one merged statement; a job whose lease was taken over still gets
    LeaseLost (alone), while the others of the same batch commit with their attempts recorded."""
    queue = queues()
    for n in range(12):
        await queue.enqueue(order(n))
    jobs = await queue.claim("w1", 30, 12)
    done = Transition(JobState.DELIVERED, "deliver", "delivered", http_status=200, count_attempt=True)
    stats = queue.committer.stats

    merged = stats.merged
    await asyncio.gather(*(queue.transition(job, "w1", done) for job in jobs[8:]))
    assert stats.merged > merged

    jobs, stolen = jobs[:8], jobs[3]
    await queue.run(_take_over, queue, stolen.id)  # an operator/other replica took job 3 meanwhile
    fell_back = stats.fell_back
    results = await asyncio.gather(*(queue.transition(job, "w1", done) for job in jobs), return_exceptions=True)
    assert [type(r).__name__ for r in results] == ["NoneType"] * 3 + ["LeaseLost"] + ["NoneType"] * 4
    assert stats.fell_back > fell_back  # the merged statement saw the stolen row and each then ran alone
    for job in jobs:
        assert job.id is not None
        stored = await queue.get(job.id)
        assert stored is not None
        history = [(a.step, a.outcome) for a in await queue.history(job.id)]
        if job.id == stolen.id:
            assert (stored.state, stored.lease_owner, stored.attempts) == ("running", "w2", 0)
            assert ("deliver", "delivered") not in history
        else:
            assert (stored.state, stored.lease_owner, stored.attempts) == ("delivered", None, 1)
            assert history.count(("deliver", "delivered")) == 1


def refund(n: int, kind: str = "refunded") -> MarkedOrder:
    return MarkedOrder(store="shop", order_id=f"o{n}", marketplace="softstore", product_id="p", kind=kind, reason=kind)


async def test_refund_of_a_leased_job_keeps_the_lease_and_its_worker_settles_it(queues: Callable[[], JobQueue]) -> None:
    """A refund or dispute from another replica never takes a held lease: the worker's merged transitions record
    every attempt; the refunded job it delivered ends delivered and flagged, the disputed one whose attempt failed
    cancelled, the one still generating is cancelled at its save (OrderCancelled) and its content given back; a
    queued job is cancelled at once."""
    worker, receiver = queues(), queues()
    for n in range(6):
        await worker.enqueue(order(n))
    jobs = await worker.claim("w1", 30, 5)
    assert await receiver.mark(refund(0)) == "pending"
    assert await receiver.mark(refund(1, "disputed")) == "pending"
    assert await receiver.mark(refund(2)) == "pending"
    assert await receiver.mark(refund(5)) == "cancelled"
    found = [await worker.get(job.id or 0) for job in jobs[:3]]
    assert [(j.state, j.lease_owner, j.flag) for j in found if j is not None] == [
        ("running", "w1", "refunded"),
        ("running", "w1", "disputed"),
        ("running", "w1", "refunded"),
    ]

    with pytest.raises(OrderCancelled):
        await worker.save_content(jobs[2], "w1", '{"keys": ["K"]}', 1.0)
    done = Transition(JobState.DELIVERED, "deliver", "delivered", http_status=200, count_attempt=True)
    failed = Transition(
        JobState.RETRY_WAIT, "deliver", "retry", http_status=500, error="HTTP 500", due_at=99.0, count_attempt=True
    )
    changes = [done, done, done, failed]  # the three alike are consecutive, so they merge
    fell_back = worker.committer.stats.fell_back
    results = await asyncio.gather(
        *(
            worker.transition(job, "w1", change)
            for job, change in zip([jobs[0], jobs[3], jobs[4], jobs[1]], changes, strict=True)
        )
    )
    assert worker.committer.stats.fell_back > fell_back  # the merged statement saw job 0's refund
    assert [r.kind if isinstance(r, Settled) else r for r in results] == ["refunded", None, None, "disputed"]
    expected = {
        0: ("delivered", "refunded", 1, ("deliver", "delivered", "delivered")),
        1: ("cancelled", None, 1, ("deliver", "retry", "cancelled")),
        2: ("cancelled", None, 0, ("generate", "ok", "cancelled")),
        3: ("delivered", None, 1, ("deliver", "delivered", "delivered")),
    }
    for n, (state, flag, attempts, attempt) in expected.items():
        job_id = jobs[n].id or 0
        stored = await worker.get(job_id)
        assert stored is not None and (stored.state, stored.flag, stored.attempts, stored.lease_owner) == (
            state,
            flag,
            attempts,
            None,
        )
        history = [(a.step, a.outcome, a.state) for a in await worker.history(job_id)]
        assert attempt in history
    # Cancelled before anything was sent: its content is given back (a revocation holds it) and a retry makes anew.
    given_back = await worker.get(jobs[2].id or 0)
    assert given_back is not None and (given_back.content, given_back.issue) == (None, 1)
    assert [(r.reason, r.sent) for r in await worker.revocations(jobs[2].id or 0)] == [("refunded", False)]
    assert await worker.revocations(jobs[1].id or 0) == []  # nothing was generated for it: nothing to revoke
    assert await receiver.mark(refund(0, "disputed")) == "flagged"
    assert (await worker.find("shop", "o5")).state == "cancelled"  # type: ignore[union-attr]  # a missing job fails the test too


async def test_refund_during_a_redelivery_leaves_the_order_delivered_and_flagged(
    queues: Callable[[], JobQueue],
) -> None:
    """A refund reaching an operator's redelivery (the keys went out with the first delivery) leaves the order
    delivered and flagged even when that attempt fails; its attempt is recorded and the keys' revocation with it."""
    queue = queues()
    await queue.enqueue(order(1))
    [job] = await queue.claim("w1", 30, 1)
    assert job.id is not None
    await queue.save_content(job, "w1", '{"keys": ["K"]}', 1.0)
    await queue.transition(job, "w1", Transition(JobState.DELIVERED, "deliver", "delivered", count_attempt=True))
    assert await queue.redeliver(job.id)
    [again] = await queue.claim("w1", 30, 1)
    assert await queue.mark(refund(1)) == "pending"
    failed = Transition(JobState.RETRY_WAIT, "deliver", "retry", http_status=503, due_at=99.0, count_attempt=True)
    settled = await queue.transition(again, "w1", failed)
    assert settled is not None and (settled.kind, settled.change.state) == ("refunded", JobState.DELIVERED)
    stored = await queue.get(job.id)
    assert stored is not None and (stored.state, stored.flag, stored.lease_owner) == ("delivered", "refunded", None)
    assert [(a.step, a.outcome, a.state) for a in await queue.history(job.id)][-3:] == [
        ("deliver", "retry", "delivered"),
        ("event", "refunded:flagged", "delivered"),
        ("revoke", "refunded:pending", "delivered"),
    ]


def _take_over(queue: JobQueue, job_id: int | None) -> None:
    from sqlalchemy import update

    from delivery_daemon.storage.jobs import JOBS

    with queue.engine.begin() as conn:
        conn.execute(update(JOBS).where(JOBS.c.id == job_id).values(lease_owner="w2"))


async def test_a_refill_wakes_the_jobs_and_carts_waiting_for_that_product(queues: Callable[[], JobQueue]) -> None:
    """wake_waiting(P) requeues the jobs of product P and the carts whose waiting item is P, not a cart waiting for
    another product (nor one whose item id only starts with P or holds LIKE wildcards)."""
    queue = queues()
    waits = {"own": None, "cart-p": "p_1", "cart-q": "q", "cart-prefix": "p_10", "cart-wild": "p%1"}
    for name in waits:
        product = "p_1" if name == "own" else "cart"
        await queue.enqueue(
            IncomingOrder(store="shop", marketplace="virtual-stores", order_id=name, product_id=product, payload={})
        )
    jobs = {job.order_id: job for job in await queue.claim("w", 30, len(waits))}
    for name, item in waits.items():
        reason = "out of keys" if item is None else item_waiting(item, "out of keys")
        await queue.transition(jobs[name], "w", Transition(JobState.WAITING, "generate", "out_of_stock", error=reason))
    woken = await queue.wake_waiting("shop", "p_1")
    assert set(woken) == {jobs["own"].id, jobs["cart-p"].id}
    assert await queue.wake_waiting("other-store", "q") == []
    for name in waits:
        job = await queue.find("shop", name)
        assert job is not None and job.state == ("queued" if name in ("own", "cart-p") else "waiting"), name
