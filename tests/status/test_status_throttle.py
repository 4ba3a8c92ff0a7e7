"""LoginThrottle: a sliding window of failed logins per client and in all, on an injected clock."""

from __future__ import annotations

from delivery_daemon.clock import ManualClock
from delivery_daemon.status.throttle import LoginThrottle, Throttled


def _throttle(clock: ManualClock, per_client: int = 3, overall: int = 5) -> LoginThrottle:
    return LoginThrottle(clock, per_client=per_client, overall=overall, window=60)


def test_client_is_throttled_after_its_limit_until_the_oldest_failure_ages_out() -> None:
    """The limit-th failure closes the client's door; it reopens when the first failure leaves the window."""
    clock = ManualClock()
    throttle = _throttle(clock)
    for count in (1, 2, 3):
        assert throttle.check("a") is None
        assert throttle.failed("a") == count
        clock.advance(10)
    assert throttle.check("a") == Throttled("client", 30)  # first failure at 0, window 60, now 30
    assert throttle.check("b") is None  # another address is not affected
    clock.advance(29)
    assert throttle.check("a") == Throttled("client", 1)
    clock.advance(1)
    assert throttle.check("a") is None


def test_failures_from_many_clients_close_the_door_for_everyone() -> None:
    """The global limit counts every client's failures, so guessing spread over addresses is throttled too."""
    clock = ManualClock()
    throttle = _throttle(clock)
    for client in ("a", "b", "c", "d", "e"):
        throttle.failed(client)
    assert throttle.check("f") == Throttled("global", 60)
    clock.advance(60)
    assert throttle.check("f") is None


def test_success_forgets_the_clients_failures_but_not_the_global_count() -> None:
    """A right secret clears its client's count; the failures still count towards the global limit."""
    clock = ManualClock()
    throttle = _throttle(clock, per_client=2, overall=3)
    throttle.failed("a")
    throttle.succeeded("a")
    throttle.failed("a")
    assert throttle.check("a") is None  # one failure since the success
    throttle.failed("b")
    assert throttle.check("c") == Throttled("global", 60)
