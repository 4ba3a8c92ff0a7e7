"""Retry timing: the schedule, full jitter, ``Retry-After`` as a floor, exhaustion and header parsing."""

from __future__ import annotations

import random
from email.utils import formatdate

import pytest

from delivery_daemon.backoff import MAX_RETRY_AFTER, Backoff, parse_retry_after

SCHEDULE = (5.0, 300.0, 1800.0)


def test_schedule_without_jitter() -> None:
    """Without jitter retry n waits exactly schedule[n-1]."""
    backoff = Backoff(SCHEDULE, jitter=False)
    assert [backoff.delay(n) for n in (1, 2, 3)] == [5.0, 300.0, 1800.0]
    assert backoff.max_retries == 3


def test_exhausted_schedule_is_none() -> None:
    """After the last scheduled retry (and for nonsense retry numbers) there is no next delay."""
    backoff = Backoff(SCHEDULE, jitter=False)
    assert backoff.delay(4) is None
    assert backoff.delay(0) is None
    assert Backoff((), jitter=False).delay(1) is None


def test_full_jitter_bounds_and_reproducible() -> None:
    """With jitter every wait lies in [0, schedule[n-1]], spread out, and a seeded Random repeats it."""
    draws = [Backoff(SCHEDULE, rng=random.Random(7)).delay(2) for _ in range(2)]
    assert draws[0] == draws[1]
    backoff = Backoff(SCHEDULE, rng=random.Random(42))
    waits = [backoff.delay(2) for _ in range(500)]
    assert all(w is not None and 0.0 <= w <= 300.0 for w in waits)
    assert min(w for w in waits if w is not None) < 30 and max(w for w in waits if w is not None) > 270


def test_retry_after_is_a_floor() -> None:
    """A Retry-After longer than the drawn wait wins; a shorter one does not shorten the schedule."""
    backoff = Backoff(SCHEDULE, jitter=False)
    assert backoff.delay(1, retry_after=120) == 120
    assert backoff.delay(2, retry_after=1) == 300
    jittered = Backoff(SCHEDULE, rng=random.Random(1))
    assert all((jittered.delay(1, retry_after=4.5) or 0) >= 4.5 for _ in range(100))


def test_retry_after_is_capped() -> None:
    """A marketplace cannot park an order for more than a day with Retry-After."""
    assert Backoff(SCHEDULE, jitter=False).delay(1, retry_after=10 * 86400) == MAX_RETRY_AFTER


def test_retry_after_does_not_extend_schedule() -> None:
    """Retry-After only shapes a retry that exists; it does not add attempts past the schedule."""
    assert Backoff(SCHEDULE, jitter=False).delay(4, retry_after=10) is None


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("-5", None),
    ],
)
def test_parse_retry_after_seconds(header: str | None, expected: float | None) -> None:
    """Delta-seconds are read as seconds; absent or unreadable values are None."""
    assert parse_retry_after(header, now=1_800_000_000.0) == expected


def test_parse_retry_after_http_date() -> None:
    """An HTTP date is the seconds from ``now`` until then, and never negative."""
    now = 1_800_000_000.0
    assert parse_retry_after(formatdate(now + 90, usegmt=True), now) == pytest.approx(90.0)
    assert parse_retry_after(formatdate(now - 90, usegmt=True), now) == 0.0
