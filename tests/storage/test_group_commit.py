"""Group commit: concurrent queue operations share transactions without sharing each other's failures."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, insert, select, text

from delivery_daemon.clock import ManualClock
from delivery_daemon.order import IncomingOrder
from delivery_daemon.storage.engine import create_db_engine, create_schema
from delivery_daemon.storage.group_commit import GroupCommitter
from delivery_daemon.storage.jobs import QueueError
from delivery_daemon.storage.models import Job, table_of
from delivery_daemon.storage.queue import JobQueue

JOBS = table_of(Job)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'queue.db'}")
    create_schema(engine)
    yield engine
    engine.dispose()


def order(order_id: str) -> IncomingOrder:
    return IncomingOrder(
        store="shop",
        marketplace="softstore",
        order_id=order_id,
        product_id="p",
        payload={"delivery_url": "https://example.test/d", "token": "t"},
    )


def job_row(order_id: str) -> dict[str, Any]:
    return {
        "store": "shop",
        "order_id": order_id,
        "marketplace": "softstore",
        "product_id": "p",
        "state": "queued",
        "payload": "{}",
        "attempts": 0,
        "received": 1,
        "due_at": 0.0,
        "created_at": 0.0,
        "updated_at": 0.0,
    }


def stored_ids(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(select(JOBS.c.order_id)).scalars())


def hold_thread(committer: GroupCommitter) -> threading.Event:
    """Occupy the database thread until the returned event is set, so that later submissions form one batch."""
    release, started = threading.Event(), threading.Event()

    def block(_conn: Any) -> None:
        started.set()
        release.wait(30)

    committer.submit(block, write=False)
    assert started.wait(30)
    return release


async def submitted(queue: JobQueue, count: int) -> None:
    """One loop turn runs each pending enqueue up to its first await, which is after its submission."""
    await asyncio.sleep(0)
    assert queue.committer._inbox.qsize() == count


async def test_concurrent_enqueues_share_commits(engine: Engine) -> None:
    """Enqueues that arrive together are committed in fewer transactions than there are enqueues, all stored, by
    one INSERT statement for the jobs (and one for their attempts)."""
    queue = JobQueue(engine, ManualClock())
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    try:
        release = hold_thread(queue.committer)
        pending = [asyncio.ensure_future(queue.enqueue(order(f"o{i}"))) for i in range(40)]
        await submitted(queue, 40)
        release.set()
        results = await asyncio.gather(*pending)
    finally:
        queue.close()
    assert all(result.created for result in results)
    assert len({result.job_id for result in results}) == 40
    assert stored_ids(engine) == {f"o{i}" for i in range(40)}
    assert queue.committer.stats.largest == 40
    assert queue.committer.stats.transactions <= 2  # the holding read, then one write transaction
    assert sum(st.startswith("INSERT INTO jobs") for st in statements) == 1
    assert sum(st.startswith("INSERT INTO attempts") for st in statements) == 1
    assert queue.committer.stats.merged == 40


async def test_duplicate_in_the_same_batch_is_detected_per_row(engine: Engine) -> None:
    """The same order twice in one shared transaction: one job created, the other answer is a duplicate."""
    queue = JobQueue(engine, ManualClock())
    try:
        release = hold_thread(queue.committer)
        first = asyncio.ensure_future(queue.enqueue(order("same")))
        second = asyncio.ensure_future(queue.enqueue(order("same")))
        await submitted(queue, 2)
        release.set()
        a, b = await asyncio.gather(first, second)
        job = await queue.find("shop", "same")
        history = await queue.history(a.job_id)
    finally:
        queue.close()
    assert (a.created, b.created) == (True, False)
    assert a.job_id == b.job_id
    assert job is not None and job.received == 2
    assert [(h.step, h.outcome) for h in history] == [("receive", "accepted")]


def test_a_failing_operation_leaves_the_rest_of_its_batch_committed(engine: Engine) -> None:
    """One operation raising inside a shared transaction is rolled back alone (savepoint); the others commit."""
    committer = GroupCommitter(engine)
    try:
        release = hold_thread(committer)

        def failing(conn: Any) -> None:
            conn.execute(insert(JOBS).values(**job_row("bad")))
            raise ValueError("refused")

        good1 = committer.submit(lambda conn: conn.execute(insert(JOBS).values(**job_row("good1"))).rowcount)
        bad = committer.submit(failing)
        good2 = committer.submit(lambda conn: conn.execute(insert(JOBS).values(**job_row("good2"))).rowcount)
        release.set()
        assert good1.result(30) == 1 and good2.result(30) == 1
        with pytest.raises(ValueError, match="refused"):
            bad.result(30)
    finally:
        committer.close()
    assert stored_ids(engine) == {"good1", "good2"}
    assert committer.stats.largest == 3


async def test_a_failed_commit_fails_every_operation_of_the_batch(engine: Engine) -> None:
    """When the shared COMMIT fails, no caller is told its work was stored, and none of it is."""
    queue = JobQueue(engine, ManualClock())

    def refuse(_conn: Any) -> None:
        raise RuntimeError("disk full")

    try:
        release = hold_thread(queue.committer)
        pending = [asyncio.ensure_future(queue.enqueue(order(f"o{i}"))) for i in range(3)]
        await submitted(queue, 3)
        event.listen(engine, "commit", refuse)
        release.set()
        results = await asyncio.gather(*pending, return_exceptions=True)
        event.remove(engine, "commit", refuse)
    finally:
        queue.close()
    assert all(isinstance(result, RuntimeError | QueueError) for result in results), results
    assert stored_ids(engine) == set()


async def test_each_caller_is_answered_only_after_the_commit(engine: Engine, tmp_path: Path) -> None:
    """An enqueue that has returned is visible to another connection (its transaction committed)."""
    queue = JobQueue(engine, ManualClock())
    other = create_db_engine(f"sqlite:///{tmp_path / 'queue.db'}")
    try:
        results = await asyncio.gather(*(queue.enqueue(order(f"o{i}")) for i in range(20)))
        with other.connect() as conn:
            count = conn.execute(text("SELECT count(*) FROM jobs")).scalar_one()
    finally:
        queue.close()
        other.dispose()
    assert len(results) == 20 and count == 20


async def test_claim_reads_due_jobs_in_index_order_without_sorting_the_backlog(engine: Engine) -> None:
    """The claim never sorts the whole backlog on SQLite (no temp B-tree beside a jobs scan); oldest first."""
    clock = ManualClock()
    queue = JobQueue(engine, clock)
    statements: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        if statement.lstrip().upper().startswith("UPDATE JOBS SET STATE"):
            statements.append((statement, parameters))

    try:
        for i in range(5):
            await queue.enqueue(order(f"o{i}"))
            clock.advance(1)
        event.listen(engine, "before_cursor_execute", capture)
        claimed = await queue.claim("w", 30, 3)
        event.remove(engine, "before_cursor_execute", capture)
    finally:
        queue.close()
    assert [job.order_id for job in claimed] == ["o0", "o1", "o2"]
    statement, parameters = statements[0]
    with engine.connect() as conn:
        plan = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).fetchall()
    # Every sort in the plan is over the small merged list, never beside a scan of the jobs table itself.
    sorted_parents = {row[1] for row in plan if "TEMP B-TREE" in str(row[-1])}
    jobs_scan_parents = {row[1] for row in plan if str(row[-1]).startswith(("SEARCH jobs USING COVERING", "SCAN jobs"))}
    assert jobs_scan_parents and not sorted_parents & jobs_scan_parents, plan
    assert all("ix_jobs_state_due" in str(row[-1]) for row in plan if str(row[-1]).startswith("SEARCH jobs USING COV"))


async def test_sealed_enqueues_share_a_commit_and_each_is_sealed_for_its_own_row(engine: Engine) -> None:
    """With a cipher, the prebuilt insert takes each row's sealed payload as a parameter: one batch, per-row context."""
    from delivery_daemon.storage.cipher import Cipher, new_key_line, parse_keys

    cipher = Cipher(parse_keys(new_key_line(), "test"))
    queue = JobQueue(engine, ManualClock(), cipher)
    try:
        release = hold_thread(queue.committer)
        pending = [asyncio.ensure_future(queue.enqueue(order(f"s{i}"))) for i in range(5)]
        await submitted(queue, 5)
        release.set()
        results = await asyncio.gather(*pending)
        jobs = [await queue.get(result.job_id) for result in results]
    finally:
        queue.close()
    assert queue.committer.stats.largest == 5
    with engine.connect() as conn:
        stored = {row.order_id: row.payload for row in conn.execute(select(JOBS.c.order_id, JOBS.c.payload))}
    for i, job in enumerate(jobs):
        assert job is not None and job.payload == order(f"s{i}").payload_json()
        assert stored[f"s{i}"] != job.payload  # sealed at rest
        assert cipher.open(stored[f"s{i}"], f"shop/s{i}/payload") == job.payload


async def test_run_executes_own_connection_functions_between_batches(engine: Engine) -> None:
    """JobQueue.run: a function that opens its own connection runs alone on the database thread, in order.

    Inside a batch it would wait for this thread's own write lock (SQLite) until the busy timeout.
    """
    queue = JobQueue(engine, ManualClock())

    def own_write() -> int:
        with engine.begin() as conn:
            return int(conn.execute(insert(JOBS).values(**job_row("own"))).rowcount)

    try:
        release = hold_thread(queue.committer)
        before = asyncio.ensure_future(queue.enqueue(order("before")))
        own = asyncio.ensure_future(queue.run(own_write))
        after = asyncio.ensure_future(queue.enqueue(order("after")))
        await submitted(queue, 3)
        release.set()
        assert (await asyncio.wait_for(own, 30)) == 1
        await asyncio.gather(before, after)
    finally:
        queue.close()
    assert stored_ids(engine) == {"before", "own", "after"}


async def test_a_failing_merged_run_falls_back_to_one_savepoint_per_operation(engine: Engine) -> None:
    """When the merged call raises, each operation runs alone: only the bad one fails, the others commit."""
    committer = GroupCommitter(engine)
    merge_calls: list[list[str]] = []

    def merged(conn: Any, items: list[str]) -> list[int]:
        merge_calls.append(list(items))
        for item in items:
            conn.execute(insert(JOBS).values(**job_row(item)))
        raise RuntimeError("one item is bad")

    def alone(item: str) -> Any:
        def fn(conn: Any) -> int:
            if item == "bad":
                raise ValueError("bad item")
            return int(conn.execute(insert(JOBS).values(**job_row(item))).rowcount)

        return fn

    try:
        release = hold_thread(committer)
        pending = [asyncio.ensure_future(committer.run_merged(alone(i), merged, i)) for i in ("a", "bad", "b")]
        await asyncio.sleep(0)
        assert committer._inbox.qsize() == 3  # one batch
        release.set()
        outcomes = await asyncio.gather(*pending, return_exceptions=True)
    finally:
        committer.close()
    assert outcomes[0] == 1 and outcomes[2] == 1 and isinstance(outcomes[1], ValueError)
    assert stored_ids(engine) == {"a", "b"}
    assert merge_calls == [["a", "bad", "b"]]  # the merged call was tried once, then each ran alone
    assert committer.stats.merged == 0


async def test_the_database_thread_keeps_one_connection_from_batch_to_batch(engine: Engine) -> None:
    """Consecutive batches, reads and writes, run on one pooled connection: no checkout per transaction."""
    checkouts: list[object] = []
    event.listen(engine, "checkout", lambda *args: checkouts.append(args[0]))
    queue = JobQueue(engine, ManualClock())
    try:
        for i in range(4):
            await queue.enqueue(order(f"o{i}"))
            assert await queue.committer.run(lambda conn: conn.execute(select(JOBS.c.id)).all(), write=False)
    finally:
        queue.close()
    assert len(checkouts) == 1
    assert stored_ids(engine) == {f"o{i}" for i in range(4)}


async def test_a_failed_batch_gives_its_connection_back_and_the_next_batch_takes_another(engine: Engine) -> None:
    """After a COMMIT fails, the connection it ran on is returned to the pool and the next write succeeds."""
    checkins: list[object] = []
    event.listen(engine, "checkin", lambda *args: checkins.append(args[0]))
    queue = JobQueue(engine, ManualClock())

    def refuse(_conn: Any) -> None:
        raise RuntimeError("disk full")

    try:
        event.listen(engine, "commit", refuse)
        with pytest.raises((RuntimeError, QueueError)):
            await queue.enqueue(order("lost"))
        event.remove(engine, "commit", refuse)
        assert len(checkins) == 1
        await queue.enqueue(order("kept"))
    finally:
        queue.close()
    assert stored_ids(engine) == {"kept"}
