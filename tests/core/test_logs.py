"""The redactor: a registered secret never reaches a rendered log line, whatever the renderer escapes. And every
line's timestamp: the wall clock, in UTC."""

from __future__ import annotations

import io
import itertools
import json
import logging
import sys
import threading
from collections.abc import Iterator

import pytest
import structlog
from freezegun import freeze_time

from delivery_daemon.logs import Redactor, configure_logging

SECRETS = {
    "plain": "sk_live_0123456789abcdef",
    "quoted": 'pa"ss\\word-42',
    "unicode": "clé-secrète-Ω-99",
    "control": "tab\there-secret",
}


@pytest.fixture(params=["json", "console"])
def rendered(request: pytest.FixtureRequest) -> Iterator[io.StringIO]:
    stream = io.StringIO()
    redactor = Redactor()
    redactor.add(*SECRETS.values())
    configure_logging(request.param, "debug", stream=stream, redactor=redactor)
    yield stream
    structlog.reset_defaults()


@pytest.mark.parametrize("name", sorted(SECRETS))
def test_secret_in_a_value_is_redacted(rendered: io.StringIO, name: str) -> None:
    """A secret in a string value is gone from the line, including those JSON or repr() would escape."""
    secret = SECRETS[name]
    structlog.get_logger("t").info("event", detail=f"before {secret} after")
    line = rendered.getvalue()
    assert "[redacted]" in line
    for form in (secret, secret.encode("unicode_escape").decode(), secret.replace('"', '\\"')):
        assert form not in line


def test_secret_nested_in_a_structure_is_redacted(rendered: io.StringIO) -> None:
    """A plain secret inside a list or dict value is replaced in the rendered line."""
    structlog.get_logger("t").info("event", nested={"keys": [SECRETS["plain"]]})
    assert SECRETS["plain"] not in rendered.getvalue()


def test_json_lines_carry_any_value_as_json() -> None:
    """A JSON line holds non-ASCII text as itself, non-string keys as strings, objects JSON lacks by their repr,
    and a key whose text a renderer would escape (a non-ASCII secret) still comes out redacted."""

    class Opaque:
        def __repr__(self) -> str:
            return "<opaque>"

    stream = io.StringIO()
    redactor = Redactor()
    redactor.add(SECRETS["unicode"])
    configure_logging("json", "info", stream=stream, redactor=redactor)
    try:
        note = f"k={SECRETS['unicode']}"
        structlog.get_logger("t").info("e", text="café Ω", counts={1: 2}, thing=Opaque(), note=note)
    finally:
        structlog.reset_defaults()
    line = stream.getvalue()
    event = json.loads(line)
    assert (event["text"], event["counts"], event["thing"]) == ("café Ω", {"1": 2}, "<opaque>")
    assert event["note"] == "k=[redacted]" and "secrète" not in line
    assert "café Ω" in line  # written as UTF-8, not as \\u escapes


def test_lines_are_stamped_with_the_wall_clock_in_utc(rendered: io.StringIO) -> None:
    """structlog's TimeStamper reads the wall clock (frozen here): each line carries that instant in ISO 8601 UTC
    ("Z"), to the microsecond. (freezegun's ``tz_offset`` cannot stand in for a host in another zone: it shifts
    ``datetime.now(tz=UTC)`` too, so UTC is pinned by the "Z" a local stamp would lack.)"""
    with freeze_time("2027-01-15 08:00:00.250000"):
        structlog.get_logger("t").info("event")
    assert "2027-01-15T08:00:00.250000Z" in rendered.getvalue()


def test_wrapped_renderer_scrubs_what_it_renders() -> None:
    """``wrap`` gives one processor that renders and then scrubs the line (str or bytes); other results pass."""
    redactor = Redactor()
    redactor.add(SECRETS["plain"])
    render = redactor.wrap(structlog.processors.JSONRenderer())
    line = render(None, "info", {"event": "e", "nested": {"keys": [SECRETS["plain"]]}})
    assert SECRETS["plain"] not in line and "[redacted]" in line
    json_renderer = structlog.processors.JSONRenderer()

    def bytes_renderer(logger: object, name: str, event: dict[str, object]) -> bytes:
        line = json_renderer(logger, name, event)
        assert isinstance(line, str)  # JSONRenderer's default serializer (json.dumps) returns str
        return line.encode()

    as_bytes = redactor.wrap(bytes_renderer)
    assert SECRETS["plain"].encode() not in as_bytes(None, "info", {"event": "e", "key": SECRETS["plain"]})
    passthrough = redactor.wrap(lambda _logger, _name, event: (event["event"],))  # not a line: left alone
    assert passthrough(None, "info", {"event": SECRETS["plain"]}) == (SECRETS["plain"],)


def test_stdlib_records_are_lines_of_the_same_stream() -> None:
    """A library's stdlib record is a JSON line on the same stream as the daemon's events, with the same keys, its
    traceback in ``exception``, the secret redacted; library records below WARNING stay off at ``info``."""
    stream = io.StringIO()
    redactor = Redactor()
    redactor.add(SECRETS["plain"])
    configure_logging("json", "info", stream=stream, redactor=redactor)
    library = logging.getLogger("some.library")
    try:
        structlog.get_logger("delivery_daemon.t").info("ours", detail=SECRETS["plain"])
        library.info("below warning, with %s", SECRETS["plain"])
        try:
            raise ValueError(f"refused {SECRETS['plain']}")
        except ValueError:
            library.exception("call failed with %s", SECRETS["plain"])
    finally:
        structlog.reset_defaults()
    text = stream.getvalue()
    ours, theirs = (json.loads(line) for line in text.splitlines())
    assert SECRETS["plain"] not in text
    assert ours.keys() >= {"timestamp", "level", "event", "logger"} and ours["logger"] == "delivery_daemon.t"
    assert theirs.keys() >= {"timestamp", "level", "event", "logger"}
    assert (theirs["event"], theirs["level"], theirs["logger"]) == (
        "call failed with [redacted]",
        "error",
        "some.library",
    )
    assert "ValueError: refused [redacted]" in theirs["exception"]
    assert theirs["timestamp"].endswith("Z")


def test_source_secrets_are_redacted_as_they_change() -> None:
    """A secret from a source (a refreshed JWT) is redacted from the first line after it appears."""
    stream = io.StringIO()
    redactor = Redactor()
    current = ["jwt-one-aaaaaaaa"]
    redactor.add_source(lambda: current)
    configure_logging("json", "info", stream=stream, redactor=redactor)
    try:
        log = structlog.get_logger("t")
        log.info("first", token="jwt-one-aaaaaaaa")
        current[0] = 'jwt"two"bbbbbbb'
        log.info("second", token='jwt"two"bbbbbbb')
    finally:
        structlog.reset_defaults()
    text = stream.getvalue()
    assert "jwt-one-aaaaaaaa" not in text and "two" not in text


def test_secrets_from_sources_stay_longest_first_and_bounded() -> None:
    """Secrets a source adds one by one keep the list longest first (a secret containing another is replaced
    whole) and only the most recent ``RECENT`` are kept, as a full rebuild would."""
    redactor = Redactor()
    redactor.RECENT = 4
    redactor.add("fixed-secret-1")
    current: list[str] = []
    redactor.add_source(lambda: current)
    assert redactor.scrub_text("nothing") == "nothing"  # builds the sorted list: later secrets are inserted
    for secret in ["tok-aaaaaa", "tok-aaaaaa-extended", 'q"uoted-secret', "mid-len-secret", "x" * 30, "tok-bbbbbb"]:
        current[:] = [secret]
        redactor.scrub_text("")
    listed = redactor._all()
    expected = sorted(
        {"fixed-secret-1", 'q"uoted-secret', "mid-len-secret", "x" * 30, "tok-bbbbbb"}, key=len, reverse=True
    )
    assert [len(s) for s in listed] == [len(s) for s in expected] and set(listed) == set(expected)
    assert redactor._escaped == ['q"uoted-secret']
    assert "tok-aaaaaa" not in listed  # pushed out of the recent ones
    current[:] = ["tok-cccccc", "tok-cccccc-extended"]
    assert redactor.scrub_text("id tok-cccccc-extended end") == "id [redacted] end"


def test_threads_adding_secrets_while_others_scrub_never_fail_or_leak() -> None:
    """Events from several threads while a source keeps yielding new secrets (and old ones are dropped): no error,
    the list stays longest first, and a secret the source still yields is redacted from every line."""
    redactor = Redactor()
    redactor.RECENT = 32
    counter = itertools.count()
    lock = threading.Lock()
    window: list[str] = []  # what the source yields: the 16 newest

    def source() -> list[str]:
        with lock:
            return list(window)

    redactor.add_source(source)
    failures: list[str] = []
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible, to interleave the bookkeeping

    def work() -> None:
        try:
            for _ in range(300):
                secret = f"secret-{next(counter):0{next(counter) % 7 + 6}d}"  # lengths vary: inserts move around
                with lock:
                    window[:] = [secret, *window[:15]]
                line = redactor.scrub_text(f"line with {secret}")
                if secret in line and secret in source():  # yielded all along, yet not redacted
                    failures.append(f"leaked {secret}")
        except Exception as exc:
            failures.append(repr(exc))

    try:
        threads = [threading.Thread(target=work) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert failures == []
    listed = redactor._all()
    assert [len(s) for s in listed] == sorted((len(s) for s in listed), reverse=True)
    assert set(source()) <= set(listed)
