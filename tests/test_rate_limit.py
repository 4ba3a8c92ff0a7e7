"""Receiver limits: per-store rate limit (429 + Retry-After, injected clock) and a deadline for slow bodies."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from delivery_daemon.clock import ManualClock
from delivery_daemon.config import RateLimitSettings
from delivery_daemon.ratelimit import RateLimiter
from tests.conftest import PRODUCT, Stack

StackFactory = Callable[..., contextlib.AbstractAsyncContextManager[Stack]]


async def test_flood_gets_429_with_retry_after_and_stores_nothing(make_stack: StackFactory) -> None:
    """Past the burst a store answers 429 + Retry-After; after the refill the resent webhook is accepted."""
    async with make_stack(server={"rate_limit": {"per_second": 0.5, "burst": 2}}) as stack:
        placed = [await stack.market.place_order(PRODUCT, 1, send_webhook=False) for _ in range(3)]
        answers = [await stack.post(p.payload) for p in placed]
        assert [a.status_code for a in answers] == [200, 200, 429]
        assert answers[2].headers["retry-after"] == "2" and answers[2].json()["error"].startswith("too many")
        assert await stack.job(placed[2].id_order) is None
        stack.clock.advance(2)
        assert (await stack.post(placed[2].payload)).status_code == 200


def test_each_store_has_its_own_bucket() -> None:
    """One store's flood does not use up another store's allowance; overrides apply per store."""
    clock = ManualClock()
    limiter = RateLimiter(RateLimitSettings(per_second=1, burst=1), {"big": RateLimitSettings(per_second=1, burst=3)},
                          clock)
    assert limiter.check("a") is None and limiter.check("a") == 1.0
    assert limiter.check("b") is None
    assert [limiter.check("big") for _ in range(4)] == [None, None, None, 1.0]
    clock.advance(0.5)
    assert limiter.check("a") == 0.5


async def test_slow_sender_gets_408(make_stack: StackFactory) -> None:
    """A sender that declares a body and never finishes it is answered 408 after server.body_timeout."""
    async with make_stack(server={"body_timeout": 0.3}) as stack:
        host, port = stack.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /webhooks/shop HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"id_order\":")
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 30)
        writer.close()
        assert status_line.split(b" ")[1] == b"408"
