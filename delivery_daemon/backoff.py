"""When to try a failed delivery again: a fixed schedule, full jitter, and the marketplace's ``Retry-After``."""

from __future__ import annotations

import random
from collections.abc import Sequence
from email.utils import parsedate_to_datetime

MAX_RETRY_AFTER = 24 * 3600.0
"""A ``Retry-After`` longer than a day is capped: the marketplace is not allowed to park an order forever."""


class Backoff:
    """``delay(n)`` is the wait before retry ``n`` (1-based); ``None`` once the schedule is used up.

    With jitter on, the wait is drawn uniformly from ``[0, schedule[n-1]]`` ("full jitter"), which spreads a burst of
    failures from one outage instead of retrying them all at the same instant. A ``Retry-After`` from the
    marketplace is a floor: the wait is never shorter than what it asked for.
    """

    def __init__(self, schedule: Sequence[float], *, jitter: bool = True, rng: random.Random | None = None) -> None:
        self.schedule = tuple(schedule)
        self.jitter = jitter
        self.rng = rng or random.SystemRandom()

    @property
    def max_retries(self) -> int:
        return len(self.schedule)

    def delay(self, retry: int, retry_after: float | None = None) -> float | None:
        if retry < 1 or retry > len(self.schedule):
            return None
        base = self.schedule[retry - 1]
        wait = self.rng.uniform(0, base) if self.jitter else base
        if retry_after is not None:
            wait = max(wait, min(retry_after, MAX_RETRY_AFTER))
        return wait


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)
