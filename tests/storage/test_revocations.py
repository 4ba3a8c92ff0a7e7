"""The revocations table under several replicas, on SQLite and on PostgreSQL: each revocation is leased to one
replica at a time, a lapsed lease is taken over (the late replica's write is refused), and one content is revoked
once however many refunds and disputes arrive."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from delivery_daemon.clock import ManualClock
from delivery_daemon.storage.jobs import MarkedOrder, Transition
from delivery_daemon.storage.models import JobState
from delivery_daemon.storage.queue import JobQueue
from tests.storage.test_queue_backends import order, queues

__all__ = ["queues"]  # the fixture, imported to be used here


def refund(n: int, kind: str = "refunded") -> MarkedOrder:
    return MarkedOrder(store="shop", order_id=f"o{n}", marketplace="softstore", product_id="p", kind=kind, reason=kind)


async def delivered(queue: JobQueue, count: int) -> None:
    for n in range(count):
        await queue.enqueue(order(n))
    for job in await queue.claim("w", 30, count):
        await queue.save_content(job, "w", f'{{"text": "", "keys": ["K{job.order_id}"]}}', 1.0)
        await queue.transition(job, "w", Transition(JobState.DELIVERED, "deliver", "delivered", count_attempt=True))


async def test_replicas_claim_each_revocation_once_and_take_over_a_lapsed_lease(
    queues: Callable[[], JobQueue],
) -> None:
    """Three replicas claiming at once get 12 revocations between them, none twice; once a holder's lease lapses
    another replica takes the revocation over and the first one's write is refused; a second dispute adds none."""
    replicas = [queues() for _ in range(3)]
    await delivered(replicas[0], 12)
    for n in range(12):
        assert await replicas[n % 3].mark(refund(n)) == "flagged"

    async def claim_all(queue: JobQueue, owner: str) -> list[int]:
        got: list[int] = []
        while batch := await queue.claim_revocations(owner, 30, 4):
            got += [item.revocation.id for item in batch if item.revocation.id is not None]
        return got

    claimed = await asyncio.gather(*(claim_all(q, f"r{i}") for i, q in enumerate(replicas)))
    flat = [rid for part in claimed for rid in part]
    assert len(flat) == 12 and len(set(flat)) == 12
    assert await replicas[1].claim_revocations("late", 30, 12) == []  # all leased: nothing due

    clock = replicas[0].clock
    assert isinstance(clock, ManualClock)
    clock.advance(31)
    taken = await replicas[1].claim_revocations("r-new", 30, 12)
    assert sorted(item.revocation.id or 0 for item in taken) == sorted(flat)
    # The revoked content travels with the claim, opened: each order's own key.
    assert sorted(item.content or "" for item in taken) == sorted(
        f'{{"text": "", "keys": ["K{item.job.order_id}"]}}' for item in taken
    )
    first = taken[0].revocation.id or 0
    done = Transition(JobState.DELIVERED, "revoke", "done")
    owner = next(f"r{i}" for i, part in enumerate(claimed) if first in part)
    assert not await replicas[0].save_revocation(first, owner, {"state": "done"}, done)  # its lease lapsed
    assert await replicas[1].save_revocation(first, "r-new", {"state": "done"}, done)

    assert await replicas[2].mark(refund(0, "disputed")) == "flagged"
    job = await replicas[2].find("shop", "o0")
    assert job is not None and job.id is not None
    assert [r.reason for r in await replicas[2].revocations(job.id)] == ["refunded"]  # the dispute added none
    outcomes = [a.outcome for a in await replicas[2].history(job.id) if a.step == "revoke"]
    assert outcomes[:1] == ["refunded:pending"] and "disputed:already" in outcomes
