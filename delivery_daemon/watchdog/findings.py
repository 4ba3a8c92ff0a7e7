"""What one watchdog run of a store found and did: one :class:`Finding` per listed paid order."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol


class Outcome(StrEnum):
    """What the watchdog did with one listed paid order (the ``outcome`` label of its metric)."""

    HAD_JOB = "had_job"  # the webhook (or an earlier run) made its job: nothing to do
    QUEUED = "queued"  # no job: queued through the receiver's path, the worker delivers it
    RACED = "raced"  # no job when looked at, but the webhook committed one first: still one job
    MISSED = "missed"  # no job and not deliverable without the webhook: raised for the seller now
    STILL_MISSED = "still_missed"  # raised by an earlier run, still without a job
    TOO_RECENT = "too_recent"  # younger than watchdog.grace: its webhook may be on its way; the next run looks again


@dataclass(frozen=True)
class Finding:
    order_id: str
    product_id: str
    placed_at: float
    outcome: Outcome
    detail: str | None = None
    job_id: int | None = None


@dataclass
class StoreReport:
    """One run over one store. ``error`` is set when listing failed part way; ``cursor`` is the store's cursor after
    the run, None when the run did not move it (it failed, or started later than the cursor)."""

    store: str
    since: float
    pages: int = 0
    findings: list[Finding] = field(default_factory=list)
    cursor: float | None = None
    error: str | None = None

    def count(self, outcome: Outcome) -> int:
        return sum(1 for finding in self.findings if finding.outcome == outcome)


class WatchdogObserver(Protocol):
    """Told what each run finds (the daemon's metrics implement it)."""

    def watchdog_run(self, store: str, result: str) -> None:
        """A run of ``store`` ended: ``ok`` or ``failed``."""

    def watchdog_order(self, store: str, outcome: str) -> None:
        """One listed order was handled with ``outcome`` (an :class:`Outcome` value)."""
