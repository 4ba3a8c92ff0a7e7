"""Who the worker tells about committed outcomes (the metrics, the stock sync), and how it tells several at once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import structlog

from delivery_daemon.storage.jobs import Transition
from delivery_daemon.storage.models import Job

log = structlog.get_logger("delivery_daemon.pipeline.worker")  # the worker's logger: these lines are its own


class Observer(Protocol):
    """Told about outcomes as they are committed (metrics, stock sync). Must not block or raise."""

    def job_finished(self, job: Job, change: Transition) -> None: ...

    def generated(self, generator: str, seconds: float) -> None: ...

    # Optional: ``revocation_finished(store, outcome)`` — a revocation ended done or dead, or was scheduled again.


class Observers:
    """Several observers as one, told in order; one that raises is logged and does not stop the others."""

    def __init__(self, observers: Sequence[Observer]) -> None:
        self.observers = tuple(observers)

    def job_finished(self, job: Job, change: Transition) -> None:
        self._tell("job_finished", job, change)

    def generated(self, generator: str, seconds: float) -> None:
        self._tell("generated", generator, seconds)

    def revocation_finished(self, store: str, outcome: str) -> None:
        self._tell("revocation_finished", store, outcome)

    def _tell(self, method: str, *args: Any) -> None:
        for observer in self.observers:
            tell = getattr(observer, method, None)
            if tell is None:  # an optional event (revocation_finished) this observer does not follow
                continue
            try:
                tell(*args)
            except Exception as exc:  # an observer's bug must not turn a committed outcome into a retry
                log.error("observer.failed", observer=type(observer).__name__, error=type(exc).__name__)
