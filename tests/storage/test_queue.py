"""The job queue on a real SQLite file: transitions, lease fencing, expiry, uniqueness and the attempt history."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from delivery_daemon.clock import ManualClock
from delivery_daemon.order import IncomingOrder
from delivery_daemon.storage.engine import create_db_engine, create_schema
from delivery_daemon.storage.jobs import LeaseLost, Transition, Verified
from delivery_daemon.storage.models import JobState
from delivery_daemon.storage.queue import JobQueue


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    built = create_db_engine(f"sqlite:///{tmp_path / 'q.db'}")
    create_schema(built)
    yield built
    built.dispose()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def queue(engine: Engine, clock: ManualClock) -> Iterator[JobQueue]:
    built = JobQueue(engine, clock)
    yield built
    built.close()


def order(order_id: str = "o1") -> IncomingOrder:
    return IncomingOrder(
        store="shop",
        marketplace="softstore",
        order_id=order_id,
        product_id="p1",
        payload={"delivery_url": "https://m.example/d/t", "token": "t"},
    )


async def test_enqueue_then_claim_then_deliver(queue: JobQueue) -> None:
    """queued → running (leased) → delivered, each change recorded as an attempt."""
    enqueued = await queue.enqueue(order())
    assert enqueued.created
    [job] = await queue.claim("w1", 30, 10)
    assert (job.state, job.lease_owner) == (JobState.RUNNING.value, "w1")
    await queue.save_verification(job, "w1", 2, "b@example.com", 1.0)
    await queue.save_content(job, "w1", '{"text":"k","download":null,"keys":["k"]}', 1.0)
    await queue.transition(
        job, "w1", Transition(JobState.DELIVERED, "deliver", "delivered", http_status=200, count_attempt=True)
    )
    stored = await queue.get(enqueued.job_id)
    assert stored is not None
    assert (stored.state, stored.attempts, stored.quantity, stored.lease_owner) == ("delivered", 1, 2, None)
    assert stored.delivered_at is not None
    steps = [(a.step, a.outcome, a.state) for a in await queue.history(enqueued.job_id)]
    assert steps == [
        ("receive", "accepted", "queued"),
        ("verify", "ok", "running"),
        ("generate", "ok", "running"),
        ("deliver", "delivered", "delivered"),
    ]


async def test_content_saved_with_its_verification_in_one_transaction(queue: JobQueue) -> None:
    """save_content(verified=...) stores quantity, buyer and content with one commit and records both steps."""
    enqueued = await queue.enqueue(order())
    [job] = await queue.claim("w1", 30, 10)
    before = queue.committer.stats.transactions
    await queue.save_content(job, "w1", '{"text":"k"}', 2.0, verified=Verified(3, "b@example.com", 1.0))
    assert queue.committer.stats.transactions == before + 1
    stored = await queue.get(enqueued.job_id)
    assert stored is not None
    assert (stored.quantity, stored.buyer_email, stored.content) == (3, "b@example.com", '{"text":"k"}')
    steps = [(a.step, a.outcome, a.duration_ms) for a in await queue.history(enqueued.job_id)]
    assert steps[-2:] == [("verify", "ok", 1.0), ("generate", "ok", 2.0)]


async def test_retry_wait_is_not_claimed_before_due(queue: JobQueue, clock: ManualClock) -> None:
    """A job in retry_wait is claimable only once its due time has come, and counts its attempts."""
    await queue.enqueue(order())
    [job] = await queue.claim("w1", 30, 10)
    await queue.transition(
        job,
        "w1",
        Transition(
            JobState.RETRY_WAIT,
            "deliver",
            "retry",
            http_status=500,
            error="boom",
            due_at=clock.now() + 60,
            count_attempt=True,
        ),
    )
    assert await queue.claim("w1", 30, 10) == []
    assert await queue.next_due() == clock.now() + 60
    clock.advance(60)
    [again] = await queue.claim("w1", 30, 10)
    assert (again.attempts, again.last_error) == (1, "boom")


async def test_claim_respects_limit_and_order(queue: JobQueue, clock: ManualClock) -> None:
    """Claim takes at most ``limit`` jobs, oldest due first, and never the same job twice."""
    for i in range(3):
        await queue.enqueue(order(f"o{i}"))
        clock.advance(1)
    first = await queue.claim("w1", 30, 2)
    second = await queue.claim("w2", 30, 2)
    assert [j.order_id for j in first] == ["o0", "o1"]
    assert [j.order_id for j in second] == ["o2"]


async def test_transition_after_lease_taken_over_is_lease_lost(queue: JobQueue, clock: ManualClock) -> None:
    """A worker whose lease expired and was re-claimed cannot change the job any more."""
    enqueued = await queue.enqueue(order())
    [stale] = await queue.claim("w1", 5, 10)
    clock.advance(6)
    assert await queue.release_expired() == 1
    [fresh] = await queue.claim("w2", 5, 10)
    with pytest.raises(LeaseLost):
        await queue.save_content(stale, "w1", "{}", 1.0)
    with pytest.raises(LeaseLost):
        await queue.transition(stale, "w1", Transition(JobState.DELIVERED, "deliver", "delivered"))
    current = await queue.get(enqueued.job_id)
    assert current is not None
    assert (current.state, current.lease_owner, current.content) == ("running", "w2", None)
    await queue.transition(fresh, "w2", Transition(JobState.DELIVERED, "deliver", "delivered"))


async def test_release_expired_only_expired(queue: JobQueue, clock: ManualClock) -> None:
    """Only leases that ran out go back to queued, with a ``lease expired`` attempt recorded."""
    a = await queue.enqueue(order("a"))
    await queue.claim("w1", 5, 1)
    b = await queue.enqueue(order("b"))
    await queue.claim("w1", 50, 1)
    clock.advance(10)
    assert await queue.release_expired() == 1
    job_a, job_b = await queue.get(a.job_id), await queue.get(b.job_id)
    assert job_a is not None and job_b is not None
    assert (job_a.state, job_a.lease_owner) == ("queued", None)
    assert job_b.state == "running"
    assert (await queue.history(a.job_id))[-1].outcome == "expired"


async def test_release_owned_hands_back(queue: JobQueue) -> None:
    """Graceful shutdown puts the owner's running jobs back in the queue."""
    e = await queue.enqueue(order())
    await queue.claim("w1", 30, 1)
    assert await queue.release_owned("w2") == 0
    assert await queue.release_owned("w1") == 1
    job = await queue.get(e.job_id)
    assert job is not None and job.state == "queued"


async def test_duplicate_enqueue_counts_received(queue: JobQueue) -> None:
    """The same (store, order_id) twice is one job; ``received`` counts the copies, history one accept."""
    first = await queue.enqueue(order())
    second = await queue.enqueue(order())
    assert first.created and not second.created and first.job_id == second.job_id
    job = await queue.get(first.job_id)
    assert job is not None and job.received == 2
    assert len(await queue.history(first.job_id)) == 1


async def test_duplicate_enqueue_concurrently_from_many_queues(engine: Engine, clock: ManualClock) -> None:
    """Concurrent enqueues of one order through separate connections/threads create exactly one job."""
    queues = [JobQueue(engine, clock) for _ in range(6)]
    try:
        barrier = threading.Barrier(len(queues))

        def enqueue_at_once(q: JobQueue) -> bool:
            barrier.wait(timeout=30)
            # The synchronous body in a transaction of its own, so the threads truly race.
            with q.engine.begin() as conn:
                return q._enqueuer.one(conn, order("same")).created

        results = await asyncio.gather(*(asyncio.to_thread(enqueue_at_once, q) for q in queues))
        assert sorted(results) == [False] * 5 + [True]
        assert (await queues[0].counts())["queued"] == 1
    finally:
        for q in queues:
            q.close()


async def test_counts_and_retry_of_dead(queue: JobQueue) -> None:
    """counts() reports every state; an operator retry moves a dead job back to queued."""
    e = await queue.enqueue(order())
    [job] = await queue.claim("w1", 30, 1)
    await queue.transition(job, "w1", Transition(JobState.DEAD, "verify", "dead", error="unpaid", count_attempt=True))
    counts = await queue.counts()
    assert counts["dead"] == 1 and counts["queued"] == 0 and set(counts) == {s.value for s in JobState}
    assert await queue.retry(e.job_id) is True
    assert await queue.retry(e.job_id) is False  # already queued: nothing to move
    assert [a.outcome for a in await queue.history(e.job_id)] == ["accepted", "dead", "retry"]


async def test_database_file_is_private(tmp_path: Path) -> None:
    """The SQLite file, which holds keys, is created 0600 in WAL mode."""
    path = tmp_path / "private.db"
    built = create_db_engine(f"sqlite:///{path}")
    try:
        create_schema(built)
        assert path.stat().st_mode & 0o777 == 0o600
        with built.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        built.dispose()


async def test_renew_leases_keeps_a_live_workers_jobs(queue: JobQueue, clock: ManualClock) -> None:
    """A worker renewing its leases keeps its jobs past the original expiry; others' leases are untouched."""
    mine = await queue.enqueue(order("mine"))
    await queue.claim("w1", 5, 1)
    other = await queue.enqueue(order("other"))
    await queue.claim("w2", 5, 1)
    clock.advance(4)
    assert await queue.renew_leases("w1", 5) == 1
    clock.advance(4)  # 8 s after the claims: w2's lease ran out, w1's renewed one did not
    assert await queue.release_expired() == 1
    job_mine, job_other = await queue.get(mine.job_id), await queue.get(other.job_id)
    assert job_mine is not None and job_other is not None
    assert (job_mine.state, job_mine.lease_owner) == ("running", "w1")
    assert job_other.state == "queued"


async def test_renew_leases_by_id_renews_only_those_jobs_of_their_owner(queue: JobQueue, clock: ManualClock) -> None:
    """Renewing named jobs extends only those the owner holds: not its other jobs, not another owner's job."""
    ids = [(await queue.enqueue(order(name))).job_id for name in ("a", "b", "c")]
    await queue.claim("w1", 5, 2)
    await queue.claim("w2", 5, 1)
    clock.advance(4)
    assert await queue.renew_leases("w1", 5, job_ids=[ids[0], ids[2]]) == 1  # c is w2's
    assert await queue.renew_leases("w1", 5, job_ids=[]) == 0
    jobs = [await queue.get(job_id) for job_id in ids]
    assert [(job.lease_owner, job.lease_until) for job in jobs if job is not None] == [
        ("w1", clock.now() + 5),
        ("w1", clock.now() + 1),
        ("w2", clock.now() + 1),
    ]
