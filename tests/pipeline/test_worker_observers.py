"""The worker's observers: each is told about committed outcomes, and one that raises changes nothing else."""

from __future__ import annotations

from typing import Any

from delivery_daemon.pipeline.observers import Observers
from delivery_daemon.storage.jobs import Transition
from delivery_daemon.storage.models import Job, JobState
from tests.support.stack import PRODUCT


class Recording:
    def __init__(self) -> None:
        self.finished: list[str] = []

    def job_finished(self, job: Job, change: Transition) -> None:
        self.finished.append(change.outcome)

    def generated(self, generator: str, seconds: float) -> None:
        pass


class Raising:
    def job_finished(self, job: Job, change: Transition) -> None:
        raise RuntimeError("observer bug")

    def generated(self, generator: str, seconds: float) -> None:
        raise RuntimeError("observer bug")


async def test_a_raising_observer_does_not_undo_the_delivery(make_stack: Any) -> None:
    """An observer that raises is logged as observer.failed; the delivery stands and later observers still hear."""
    async with make_stack() as stack:
        recording = Recording()
        stack.daemon.worker.observer = Observers([Raising(), recording])
        placed = await stack.market.place_order(PRODUCT)
        await stack.drain()
        assert (await stack.job(placed.id_order)).state == JobState.DELIVERED.value
        assert len(stack.market.deliveries(placed.id_order)) == 1
        assert recording.finished == ["delivered"]
        assert '"observer.failed"' in stack.logs.getvalue()
