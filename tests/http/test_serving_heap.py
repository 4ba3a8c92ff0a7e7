"""settle_heap: what a server holds once it has started is hidden from the cyclic collector, and re-examined
by the next call."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from delivery_daemon.http.serving import settle_heap


class _Node:
    other: _Node | None = None


@pytest.fixture(autouse=True)
def _unfreeze() -> Iterator[None]:
    yield
    gc.unfreeze()  # the rest of the test session keeps its usual collector


def test_objects_alive_at_settle_are_not_walked_by_full_collections() -> None:
    """After settle_heap an object alive at the call is no longer in any generation, so no collection walks it."""
    held = _Node()
    assert any(obj is held for obj in gc.get_objects())
    frozen = settle_heap()
    assert frozen == gc.get_freeze_count() > 0
    assert not any(obj is held for obj in gc.get_objects())
    later = _Node()
    assert any(obj is later for obj in gc.get_objects())


def test_second_settle_collects_cycles_that_died_since_the_first() -> None:
    """A cycle frozen while alive and dropped afterwards is left by gc.collect() but freed by the next settle."""
    first, second = _Node(), _Node()
    first.other, second.other = second, first
    gone = weakref.ref(first)
    settle_heap()
    del first, second
    gc.collect()
    assert gone() is not None  # frozen: the collector does not see the dead cycle
    settle_heap()
    assert gone() is None
