"""structlog set-up: one event per line, JSON when stdout is not a terminal, readable when it is.

One stream: :func:`configure_logging` also routes every stdlib log record (uvicorn's, SQLAlchemy's, httpx's, a
plugin's) and every Python warning (through the ``py.warnings`` logger) to the same stream, rendered by the same
renderer (structlog's ``ProcessorFormatter``) with the same keys — ``timestamp``, ``level``, ``event``, ``logger`` —
and scrubbed by the same redactor. All of the process's logging configuration is done here: the servers are started
with uvicorn's own ``log_config`` switched off, so uvicorn's records reach the root logger like any library's.

A redaction processor replaces every registered secret (API keys, webhook secrets, JWTs, SMTP passwords, secret
plugin options) wherever it would appear in an event. Delivery tokens and generated keys are never passed to a log
call in the first place; the redactor is the second line of defence for the secrets the daemon holds in memory.

Third-party libraries log through stdlib :mod:`logging` (httpx logs every request URL, and SoftStore's delivery URL
carries the order's token). :func:`install_record_scrubber` makes every stdlib record scrubbed *when it is created*,
whatever handler later receives it: registered secrets are replaced, and in records of the HTTP client libraries
every URL is cut down to its origin (a path or query may hold a token the daemon never registered).
"""

from __future__ import annotations

import bisect
import logging
import re
import sys
import threading
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any, TextIO

import orjson
import structlog

REDACTED = "[redacted]"
QUIET_LOGGERS = ("httpx", "httpcore", "hpack")
"""Third-party loggers that print request URLs or headers (which hold tokens) below WARNING."""
URL_LOGGERS = ("httpx", "httpcore", "hpack", "h11", "h2")
"""Loggers whose records have every URL cut to its origin (the path of a delivery URL is a token)."""
_VERBATIM = re.compile(r"[!#-&(-\[\]-~ ]+")
"""Printable ASCII without quotes or backslash: what JSON and repr() write unchanged."""
_URL_PATH = re.compile(r"(?P<origin>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s'\"?#]+)[/?#][^\s'\"]*")


class Redactor:
    """A structlog processor that scrubs known secret strings from every string value of an event."""

    RECENT = 128
    """How many secrets that came from sources are remembered (JWTs rotate: old ones are kept a while, not forever).
    Every log line is checked against each of them. (It was 256 while SoftStore registered two strings per order;
    it registers one now, so 128 covers as many orders, at half the cost per line.)"""

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._recent: dict[str, None] = {}  # insertion-ordered, bounded
        self._sources: list[Callable[[], Iterable[str]]] = []
        self._sorted: list[str] | None = None  # every secret, longest first; rebuilt only when the set changes
        self._escaped: list[str] = []  # those a renderer would write differently (see __call__)
        self._lock = threading.RLock()

    def add(self, *secrets: str | None) -> None:
        with self._lock:
            self._secrets.update(s for s in secrets if s and len(s) >= 6)
            self._sorted = None

    def add_source(self, source: Callable[[], Iterable[str]]) -> None:
        """A callable asked at each event for secrets that change at run time (e.g. a refreshed JWT)."""
        self._sources.append(source)

    def _all(self) -> list[str]:
        """Every secret, longest first: a list that is never changed once returned (scrubbing may go on in another
        thread while a source adds a secret), so callers iterate it without a lock."""
        # Events come from several threads (the event loop, the database thread, stdlib records from anywhere):
        # the bookkeeping below is one critical section. Re-entrant, in case a source itself logs.
        with self._lock:
            # What a source returned is kept for a while: a JWT replaced by a fresh one may still sit in a late
            # message. A secret a source still returns is re-added if it was pushed out, so live ones stay covered.
            for source in self._sources:
                fresh = set(source()).difference(self._secrets, self._recent)  # one C-level pass per source
                for secret in fresh:
                    if secret and len(secret) >= 6:
                        self._remember(secret)
            if self._sorted is None:
                # Longest first, so a secret that contains another is replaced whole. Sorted when the fixed set
                # changes, and kept in order as sources add secrets (profile: a SoftStore adapter's source yields a
                # new delivery token per order, and re-sorting ~70 secrets per event was a share of the drain).
                self._sorted = sorted(self._secrets.union(self._recent), key=len, reverse=True)
                self._escaped = [secret for secret in self._sorted if not _VERBATIM.fullmatch(secret)]
            return self._sorted

    def _remember(self, secret: str) -> None:
        """Add a source's new secret (under the lock), dropping the oldest past ``RECENT``. Copy on write: a list
        handed out by :meth:`_all` may be iterated right now, and changing it in place could skip a secret."""
        self._recent[secret] = None
        forgotten = next(iter(self._recent)) if len(self._recent) > self.RECENT else None
        if forgotten is not None:
            del self._recent[forgotten]
        current = self._sorted
        if current is None:
            return  # rebuilt whole by _all
        at = bisect.bisect(current, -len(secret), key=lambda s: -len(s))
        updated = [*current[:at], secret, *current[at:]]
        escaped = (
            self._escaped if _VERBATIM.fullmatch(secret) else [s for s in updated if s in self._escaped or s == secret]
        )
        if forgotten is not None and forgotten not in self._secrets:
            updated = [s for s in updated if s != forgotten]
            escaped = [s for s in escaped if s != forgotten]
        self._sorted, self._escaped = updated, escaped

    def scrub_text(self, value: str) -> str:
        """``value`` with every registered secret replaced by ``[redacted]``."""
        return self.scrub(value, self._all())

    def scrub(self, value: str, secrets: Iterable[str]) -> str:
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value

    def rendered(self, _logger: Any, _name: str, line: Any) -> Any:
        """A rendered line (a str) scrubbed as a whole. The sources were asked by :meth:`__call__` for this same
        event, so they are not asked again. Use it through :meth:`wrap`, which keeps it right after the renderer.
        A line of bytes (a bytes renderer) is scrubbed as UTF-8; anything else is not a line and is returned as is."""
        if isinstance(line, bytes):
            return self.rendered(_logger, _name, line.decode("utf-8", "surrogateescape")).encode(
                "utf-8", "surrogateescape"
            )
        if not isinstance(line, str):
            return line
        return self.scrub(line, self._sorted if self._sorted is not None else self._all())

    def wrap(self, renderer: Callable[[Any, str, Any], Any]) -> Callable[[Any, str, Any], Any]:
        """``renderer`` and then :meth:`rendered`, as one processor (the last of the chain): a secret nested in a
        list or dict value is only seen by a scrub of the whole line, so nothing may come between the two."""

        def render_scrubbed(logger: Any, name: str, event: Any) -> Any:
            return self.rendered(logger, name, renderer(logger, name, event))

        return render_scrubbed

    def __call__(self, _logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        """Scrub string values for the secrets a renderer would escape (a quote, a backslash, a control or
        non-ASCII character): in the rendered line those no longer read as the secret. Every other secret is
        written verbatim by the JSON and console renderers, so :meth:`rendered` replaces it in the line, in one
        pass instead of one per value (profile: the per-value pass over every secret was most of the redactor)."""
        self._all()
        secrets = self._escaped
        if not secrets:
            return event
        for key, value in event.items():
            if isinstance(value, str):
                event[key] = self.scrub(value, secrets)
        return event


REDACTOR = Redactor()


def scrub_record(record: logging.LogRecord, redactor: Redactor) -> logging.LogRecord:
    """The record with its message (arguments merged in) and exception text scrubbed, in place."""
    try:
        message = record.getMessage()
    except (TypeError, ValueError):  # a broken %-format in a third-party call: keep the template only
        message = str(record.msg)
    clean = redactor.scrub_text(message)
    if (record.name or "").split(".")[0] in URL_LOGGERS:  # logging.makeLogRecord() creates one with no name first
        clean = _URL_PATH.sub(lambda m: f"{m.group('origin')}/{REDACTED}", clean)
    if clean != message:
        record.msg, record.args = clean, None
    if record.exc_info and record.exc_info[1] is not None:
        # Formatted now (what Formatter.format would do later), so the traceback text is scrubbed too.
        record.exc_text = redactor.scrub_text(logging.Formatter().formatException(record.exc_info))
        record.exc_info = None
    return record


_installed: list[Redactor] = []


def install_record_scrubber(redactor: Redactor = REDACTOR) -> None:
    """Scrub every stdlib log record at creation (idempotent): handlers added later, by anyone, get clean records."""
    if _installed:
        _installed[0] = redactor
        return
    _installed.append(redactor)
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return scrub_record(previous(*args, **kwargs), _installed[0])

    logging.setLogRecordFactory(factory)


_WRITE_LOCK = threading.Lock()
"""Held for each line written to the log stream, by structlog's events and stdlib records alike: lines from two
threads (the event loop, the database thread) never interleave."""


class LineLogger:
    """structlog's output: each event is one ``write`` of the line and its newline, then a flush, under the lock the
    stdlib handler shares. ``name`` is what ``structlog.get_logger(name)`` was given: the line's ``logger`` key."""

    def __init__(self, stream: TextIO, name: str = "") -> None:
        self.stream = stream
        self.name = name

    def msg(self, message: str) -> None:
        with _WRITE_LOCK:
            self.stream.write(message + "\n")
            self.stream.flush()

    log = debug = info = warn = warning = error = err = critical = exception = fatal = failure = msg


class LineLoggerFactory:
    """Makes a :class:`LineLogger` on ``stream`` for each ``structlog.get_logger(name)``."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def __call__(self, *args: Any) -> LineLogger:
        return LineLogger(self.stream, str(args[0]) if args else "")


class LineHandler(logging.StreamHandler[TextIO]):
    """The root logger's handler that :func:`configure_logging` installs (and replaces when called again)."""

    def emit(self, record: logging.LogRecord) -> None:
        with _WRITE_LOCK:
            super().emit(record)


def _record_exception(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A stdlib record's traceback as the ``exception`` key, as a structlog event has it: :func:`scrub_record` has
    already formatted (and scrubbed) it into ``exc_text``."""
    record = event.get("_record")
    if record is not None and record.exc_text and "exception" not in event:
        event["exception"] = record.exc_text
    return event


def json_line(event: Any, *, default: Callable[[Any], Any] | None = None, **_ignored: Any) -> str:
    """structlog's ``JSONRenderer`` serializer: the event as one JSON line, by orjson.

    Why not ``json.dumps`` (structlog's default): it was ~70 % of a log call's CPU (a 12-key event: ~30 µs of a
    ~44 µs call on the 2-core machine; orjson renders it in ~1 µs), and the daemon writes five lines per order
    (issue #26, item 4). Differences a reader sees: non-ASCII text is written as UTF-8 instead of ``\\u`` escapes
    (the redactor scrubs both forms), non-string keys become strings, and anything else orjson does not know goes
    through structlog's fallback (``default``: its ``repr``), as before."""
    return orjson.dumps(event, default=default, option=orjson.OPT_NON_STR_KEYS).decode()


def configure_logging(
    fmt: str = "auto", level: str = "info", stream: TextIO | None = None, redactor: Redactor = REDACTOR
) -> None:
    """Configure structlog, and route stdlib logging and Python warnings to the same ``stream`` (default stdout), as
    the same lines: JSON for ``fmt="json"`` (``"auto"``: when the stream is not a terminal), else readable.

    structlog events are dropped below ``level``; stdlib records below ``level`` or WARNING, whichever is higher
    (libraries' INFO lines — httpx's carry request URLs — stay off)."""
    stream = stream or sys.stdout
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=json_line)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    numeric = getattr(logging, level.upper(), logging.INFO)
    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.stdlib.add_logger_name,
            stamp,
            structlog.processors.format_exc_info,  # before the redactor, so a traceback's text is scrubbed too
            redactor,
            redactor.wrap(renderer),  # and the whole line once more: a secret nested in a list or dict value
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=LineLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    install_record_scrubber(redactor)
    handler = LineHandler(stream)
    handler.setLevel(max(numeric, logging.WARNING))
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.contextvars.merge_contextvars,
                structlog.processors.add_log_level,
                structlog.stdlib.add_logger_name,
                stamp,
                _record_exception,
                structlog.processors.format_exc_info,
            ],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, redactor, redactor.wrap(renderer)],
        )
    )
    root = logging.getLogger()
    for previous in [h for h in root.handlers if isinstance(h, LineHandler)]:
        root.removeHandler(previous)
    root.addHandler(handler)
    logging.captureWarnings(True)  # warnings.warn() becomes a record of the py.warnings logger
    # httpx logs every request URL at INFO, and SoftStore's delivery URL carries the order's token: pinned, so
    # that nothing (a root logger at DEBUG, an embedding app) can turn those lines on.
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
