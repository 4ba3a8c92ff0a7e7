"""An enqueue given a lease commits the new job running and leased to that worker (the receiver's hand-off), on
both databases; held orders and duplicates are untouched, and the lease fences and expires like a claim's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from delivery_daemon.clock import ManualClock
from delivery_daemon.order import IncomingOrder
from delivery_daemon.storage.engine import create_db_engine, create_schema
from delivery_daemon.storage.jobs import Lease, LeaseLost, Transition
from delivery_daemon.storage.models import Job, JobState
from delivery_daemon.storage.queue import JobQueue


@pytest.fixture
async def queue(db_url: str) -> AsyncIterator[tuple[JobQueue, ManualClock]]:
    engine = create_db_engine(db_url)
    create_schema(engine)
    clock = ManualClock()
    built = JobQueue(engine, clock)
    yield built, clock
    built.close()
    engine.dispose()


def order(order_id: str, *, held: str | None = None) -> IncomingOrder:
    return IncomingOrder(
        store="shop", marketplace="softstore", order_id=order_id, product_id="p1", payload={"token": "t"}, held=held
    )


async def test_a_leased_enqueue_commits_the_job_running_and_returns_it(queue: tuple[JobQueue, ManualClock]) -> None:
    """The job is stored running, leased to the owner for the lease's seconds, and returned as stored."""
    q, clock = queue
    enqueued = await q.enqueue(order("o1"), Lease("w1", 30))
    assert enqueued.created and enqueued.job is not None
    stored = await q.get(enqueued.job_id)
    assert stored is not None
    assert (stored.state, stored.lease_owner, stored.lease_until) == ("running", "w1", clock.now() + 30)
    assert enqueued.job == stored
    assert await q.claim("w2", 30, 10) == []  # nobody else can claim it
    assert [a.outcome for a in await q.history(enqueued.job_id)] == ["accepted"]


async def test_held_orders_and_duplicates_are_not_leased(queue: tuple[JobQueue, ManualClock]) -> None:
    """A held order is stored held and a duplicate only counted, lease or not: neither returns a job to process."""
    q, _clock = queue
    held = await q.enqueue(order("h1", held="no buyer email"), Lease("w1", 30))
    assert held.created and held.job is None
    assert (await q.get(held.job_id)).state == JobState.HELD.value  # type: ignore[union-attr]  # the job was just stored
    first = await q.enqueue(order("o1"))
    again = await q.enqueue(order("o1"), Lease("w1", 30))
    assert (again.created, again.job, again.job_id) == (False, None, first.job_id)
    assert (await q.get(first.job_id)).state == JobState.QUEUED.value  # type: ignore[union-attr]  # the job was just stored


async def test_enqueues_merged_into_one_insert_keep_each_ones_lease(queue: tuple[JobQueue, ManualClock]) -> None:
    """Enqueues submitted together (one multi-row INSERT) lease only those that asked, each to its owner."""
    q, _clock = queue
    leases = [Lease(f"w{i}", 30) if i % 2 == 0 else None for i in range(12)]
    results = await asyncio.gather(*(q.enqueue(order(f"o{i}"), lease) for i, lease in enumerate(leases)))
    assert q.committer.stats.merged > 0, "the enqueues were merged"
    for result, lease in zip(results, leases, strict=True):
        stored = await q.get(result.job_id)
        assert stored is not None
        if lease is None:
            assert (result.job, stored.state, stored.lease_owner) == (None, "queued", None)
        else:
            assert result.job is not None and result.job.lease_owner == lease.owner
            assert (stored.state, stored.lease_owner) == ("running", lease.owner)


async def test_a_handed_over_job_whose_worker_died_is_queued_again(queue: tuple[JobQueue, ManualClock]) -> None:
    """The lease expires like a claimed job's: the job goes back to the queue, its dead owner's write is fenced."""
    q, clock = queue
    enqueued = await q.enqueue(order("o1"), Lease("gone", 30))
    assert enqueued.job is not None
    clock.advance(31)
    assert await q.release_expired() == 1
    [job] = await q.claim("w2", 30, 10)
    assert job.id == enqueued.job_id
    with pytest.raises(LeaseLost):
        await q.transition(enqueued.job, "gone", Transition(JobState.DEAD, "verify", "dead"))


async def test_the_taken_hook_sees_each_new_leased_job_before_its_enqueue_returns(
    queue: tuple[JobQueue, ManualClock],
) -> None:
    """``Lease.taken`` is called on the caller's loop with each new leased job, merged or not, before its enqueue
    returns; never for a duplicate or a held order."""
    q, _clock = queue
    loop = asyncio.get_running_loop()
    seen: list[tuple[str, int | None, bool]] = []

    def hook(job: Job) -> None:
        seen.append((job.order_id, job.id, asyncio.get_running_loop() is loop))

    async def enqueue(o: IncomingOrder) -> tuple[str, int, bool]:
        result = await q.enqueue(o, Lease("w1", 30, taken=hook))
        return o.order_id, result.job_id, any(order_id == o.order_id for order_id, _, _ in seen)

    alone = await enqueue(order("o0"))
    together = await asyncio.gather(*(enqueue(order(f"o{i}")) for i in range(1, 9)))
    assert q.committer.stats.merged > 0, "some enqueues were merged"
    await enqueue(order("o0"))  # a duplicate
    await enqueue(order("h1", held="no buyer email"))
    created = [alone, *together]
    assert all(before_return for _, _, before_return in created)
    assert sorted(seen) == sorted((order_id, job_id, True) for order_id, job_id, _ in created)
