"""How many wrong passwords and bearer tokens the status page listens to: a sliding window per client and in all.

Within ``window`` seconds a client address may fail ``per_client`` times and all clients together ``overall``
times; past either limit every login attempt (right or wrong) is answered 429 until the oldest counted failure
ages out, so a guesser learns nothing more. The client is the TCP peer, or the forwarded address when the peer is
one of ``server.trusted_proxies`` (uvicorn decides, before this code runs). The global limit matters behind a
reverse proxy not listed there, where every client has the proxy's address, and against guessing spread over many
addresses. A successful login clears its client's
failures (not the global ones).

State is in memory, per process: a restart forgets it, and replicas count apart. Memory stays bounded because a
throttled attempt is not recorded, so at most ``overall`` failures are held at any time.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Literal

from delivery_daemon.clock import Clock


@dataclass(frozen=True)
class Throttled:
    """Why an attempt is refused and how many whole seconds until the next one may be tried."""

    scope: Literal["client", "global"]
    retry_after: int


class LoginThrottle:
    """Counts failed logins per client and in all over a sliding window of ``window`` seconds."""

    def __init__(self, clock: Clock, *, per_client: int, overall: int, window: float) -> None:
        self.clock = clock
        self.per_client = per_client
        self.overall = overall
        self.window = window
        self._clients: dict[str, deque[float]] = {}
        self._all: deque[float] = deque()

    def _expire(self, now: float) -> None:
        cutoff = now - self.window
        while self._all and self._all[0] <= cutoff:
            self._all.popleft()
        for client in list(self._clients):
            failures = self._clients[client]
            while failures and failures[0] <= cutoff:
                failures.popleft()
            if not failures:
                del self._clients[client]

    def _wait(self, oldest: float, now: float) -> int:
        return max(1, math.ceil(oldest + self.window - now))

    def check(self, client: str) -> Throttled | None:
        """None when ``client`` may try a secret now; else the scope that is full and the seconds to wait."""
        now = self.clock.monotonic()
        self._expire(now)
        failures = self._clients.get(client)
        if failures is not None and len(failures) >= self.per_client:
            return Throttled("client", self._wait(failures[0], now))
        if len(self._all) >= self.overall:
            return Throttled("global", self._wait(self._all[0], now))
        return None

    def failed(self, client: str) -> int:
        """Count one wrong secret from ``client``; returns its failures within the window, this one included."""
        now = self.clock.monotonic()
        self._all.append(now)
        failures = self._clients.setdefault(client, deque())
        failures.append(now)
        return len(failures)

    def succeeded(self, client: str) -> None:
        """Forget ``client``'s failures after a right secret (the global count stays)."""
        self._clients.pop(client, None)
