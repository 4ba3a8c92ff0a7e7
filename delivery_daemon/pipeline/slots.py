"""The worker's slots: at most ``concurrency`` jobs are verified, generated and delivered at once, and a job the
receiver is committing can hold one before it exists (:class:`Reservation`, the hand-off of issue #26).

A job holds its slot from its claim (or reservation) until its outcome is known; its task lives on until the
outcome's commit, so up to about twice ``concurrency`` tasks may exist. Giving a slot back tells the worker it has
capacity (``on_free``), not that a job is due: the worker claims only when something may be.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable

from delivery_daemon.clock import Clock
from delivery_daemon.pipeline.stores import Store
from delivery_daemon.pipeline.verify import Early
from delivery_daemon.storage.jobs import Lease
from delivery_daemon.storage.models import Job


def make_owner() -> str:
    """A lease owner id unique to this process: host, pid and a random suffix."""
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Slots:
    """``capacity`` slots; ``on_free`` is called whenever one is given back."""

    def __init__(self, capacity: int, on_free: Callable[[], None]) -> None:
        self.capacity = capacity
        self.busy = 0
        self._on_free = on_free

    @property
    def free(self) -> int:
        return self.capacity - self.busy

    def take(self) -> Slot:
        """One slot, taken now (the caller checked :attr:`free`)."""
        return Slot(self)

    def _give_back(self) -> None:
        self.busy -= 1
        self._on_free()


class Slot:
    """One taken slot."""

    def __init__(self, slots: Slots) -> None:
        slots.busy += 1
        self._slots: Slots | None = slots

    def release(self) -> None:
        """Give the slot back (once; later calls do nothing)."""
        if self._slots is not None:
            slots, self._slots = self._slots, None
            slots._give_back()


def release(slot: Slot | None) -> None:
    if slot is not None:
        slot.release()


class Reservation:
    """A slot held for a job being committed, and the :class:`Lease` to commit it with: the job is then started in
    that slot (:meth:`Worker.enqueue <delivery_daemon.pipeline.worker.Worker.enqueue>`), or the reservation is
    released (a duplicate, a failed commit).

    The lease's ``taken`` hook starts verifying the job as soon as its row is inserted (:attr:`early`), so that the
    marketplace's round trip overlaps the commit; a duplicate never asks the marketplace."""

    def __init__(self, slot: Slot, owner: str, seconds: float, store: Store, clock: Clock) -> None:
        self.slot = slot
        self.lease = Lease(owner, seconds, taken=self._verify_early)
        self.early: Early | None = None
        self._store = store
        self._clock = clock

    def _verify_early(self, job: Job) -> None:
        self.early = Early(self._store.marketplace, job, self._clock)

    def release(self) -> None:
        if self.early is not None:
            self.early.cancel()
        self.slot.release()
