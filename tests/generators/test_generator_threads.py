"""Hung sync generators: abandoned threads are counted per product and bounded, then freed when they end."""

from __future__ import annotations

import threading

import anyio
import pytest

from delivery_daemon.errors import Retry
from delivery_daemon.generators.contract import Generated, OrderContext
from delivery_daemon.generators.threads import HungThreads
from delivery_daemon.pipeline.generate import call_generator
from delivery_daemon.testing import fake_order


class Stuck:
    """A sync generator that blocks until released, counting the calls that started."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = 0

    def generate(self, order: OrderContext) -> Generated:
        self.started += 1
        self.release.wait(30)
        return Generated(keys=["K"] * order.quantity)


async def test_hung_threads_are_bounded_then_freed() -> None:
    """Past the limit of calls still running after their budget, a call is a Retry and starts no thread; once the
    hung threads end, calls run again."""
    stuck, threads = Stuck(), HungThreads(limit=2)
    try:
        for _ in range(2):
            with pytest.raises(Retry, match="took longer than"):
                await call_generator(stuck, fake_order(), budget=0.05, name="stuck", threads=threads)
        assert threads.hung == 2
        with pytest.raises(Retry, match="2 calls still running past their time budget"):
            await call_generator(stuck, fake_order(), budget=0.05, name="stuck", threads=threads)
        assert stuck.started == 2  # the refused call started no thread
    finally:
        stuck.release.set()
    with anyio.fail_after(10):
        while True:  # the released threads end on their own
            if threads.hung == 0:
                break
            await anyio.sleep(0.01)
    result = await call_generator(stuck, fake_order(quantity=2), budget=5, name="stuck", threads=threads)
    assert list(result.keys) == ["K", "K"] and stuck.started == 3


async def test_a_call_within_budget_is_never_counted() -> None:
    """Calls that finish in time leave nothing counted, however many there are."""
    stuck, threads = Stuck(), HungThreads(limit=1)
    stuck.release.set()
    for _ in range(5):
        await call_generator(stuck, fake_order(), budget=5, name="quick", threads=threads)
    assert threads.hung == 0 and stuck.started == 5


def test_rebuilt_products_share_their_count() -> None:
    """Stores rebuilt on the same hub (a SIGHUP reload) keep each product's count: threads left hung by the old
    build still count against the new one."""
    from delivery_daemon.clock import ManualClock
    from delivery_daemon.compose import default_marketplaces
    from delivery_daemon.config import parse_settings
    from delivery_daemon.generators.discovery import discover
    from delivery_daemon.generators.resources import ResourceHub
    from delivery_daemon.pipeline.stores import build_stores

    settings = parse_settings(
        {
            "stores": [
                {
                    "name": "s",
                    "marketplace": "softstore",
                    "api_url": "https://api.example/api/v1",
                    "api_key": "k" * 40,
                    "products": {"p": {"generator": "pattern"}},
                    "default": {"generator": "pattern"},
                }
            ]
        },
        environ={},
    )
    hub = ResourceHub()
    first, second = (
        build_stores(settings, default_marketplaces(), dict(discover()), ManualClock(), hub=hub)["s"] for _ in range(2)
    )
    assert first.products["p"].threads is second.products["p"].threads
    assert first.default is not None and second.default is not None
    assert first.default.threads is second.default.threads is not first.products["p"].threads


async def test_a_call_that_raises_in_time_is_not_counted() -> None:
    """A sync generator that fails within its budget leaves nothing counted."""

    class Failing:
        def generate(self, order: OrderContext) -> Generated:
            raise RuntimeError("no keys today")

    threads = HungThreads(limit=1)
    for _ in range(3):
        with pytest.raises(RuntimeError, match="no keys today"):
            await call_generator(Failing(), fake_order(), budget=5, name="failing", threads=threads)
    assert threads.hung == 0
