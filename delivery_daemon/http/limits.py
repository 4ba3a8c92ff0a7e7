"""Per-store token buckets for the webhook receiver: a flood to one store is answered 429 with ``Retry-After``.

Each store has its own bucket (``server.rate_limit`` for every store, ``server.store_rate_limits.<name>`` to
override one), so a noisy or hostile sender cannot starve another store. Time comes from the injected clock's
monotonic reading. A refused webhook stores nothing; the marketplace resends it later.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from delivery_daemon.clock import Clock
from delivery_daemon.config import RateLimitSettings


@dataclass
class TokenBucket:
    """``per_second`` tokens added continuously up to ``burst``; each webhook takes one."""

    per_second: float
    burst: float
    tokens: float
    updated: float

    def take(self, now: float) -> float | None:
        """None if a token was taken, else the seconds until one will be available."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.per_second)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return None
        return (1 - self.tokens) / self.per_second


class RateLimiter:
    """One bucket per store, created on first use."""

    def __init__(
        self, default: RateLimitSettings | None, per_store: Mapping[str, RateLimitSettings], clock: Clock
    ) -> None:
        self.default = default
        self.per_store = dict(per_store)
        self.clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def check(self, store: str) -> float | None:
        """None when ``store`` may take this webhook now, else the wait in seconds (for ``Retry-After``)."""
        limit = self.per_store.get(store, self.default)
        if limit is None:
            return None
        now = self.clock.monotonic()
        bucket = self._buckets.get(store)
        if bucket is None:
            bucket = self._buckets[store] = TokenBucket(limit.per_second, limit.burst, limit.burst, now)
        return bucket.take(now)
