"""structlog set-up: one event per line, JSON when stdout is not a terminal, readable when it is.

A redaction processor replaces every registered secret (API keys, webhook secrets, JWTs) wherever it would appear
in an event. Delivery tokens and generated keys are never passed to a log call in the first place; the redactor is
the second line of defence for the secrets the daemon holds in memory.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any, TextIO

import structlog

REDACTED = "[redacted]"
QUIET_LOGGERS = ("httpx", "httpcore", "hpack")
"""Third-party loggers that print request URLs or headers (which hold tokens) below WARNING."""


class Redactor:
    """A structlog processor that scrubs known secret strings from every string value of an event."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._sources: list[Callable[[], Iterable[str]]] = []

    def add(self, *secrets: str | None) -> None:
        self._secrets.update(s for s in secrets if s and len(s) >= 6)

    def add_source(self, source: Callable[[], Iterable[str]]) -> None:
        """A callable asked at each event for secrets that change at run time (e.g. a refreshed JWT)."""
        self._sources.append(source)

    def _all(self) -> set[str]:
        found = set(self._secrets)
        for source in self._sources:
            found.update(s for s in source() if s and len(s) >= 6)
        return found

    def scrub(self, value: str, secrets: set[str]) -> str:
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value

    def __call__(self, _logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        secrets = self._all()
        if not secrets:
            return event
        for key, value in event.items():
            if isinstance(value, str):
                event[key] = self.scrub(value, secrets)
        return event


REDACTOR = Redactor()


def configure_logging(fmt: str = "auto", level: str = "info", stream: TextIO | None = None,
                      redactor: Redactor = REDACTOR) -> None:
    """Configure structlog (and route stdlib logging through the same level)."""
    stream = stream or sys.stdout
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    numeric = getattr(logging, level.upper(), logging.INFO)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redactor,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr)
    # httpx logs every request URL at INFO, and SoftStore's delivery URL carries the order's token: pinned, so
    # that nothing (a root logger at DEBUG, an embedding app) can turn those lines on.
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
