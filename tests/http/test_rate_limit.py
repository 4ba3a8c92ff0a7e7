"""Receiver limits: per-store rate limit (429 + Retry-After, injected clock), the body cap and a deadline for slow
bodies — over real loopback sockets where the transport matters."""

from __future__ import annotations

import asyncio
import contextlib
import io
import secrets
from pathlib import Path

import httpx

from delivery_daemon.clock import ManualClock
from delivery_daemon.compose import create_app, default_marketplaces
from delivery_daemon.config import RateLimitSettings, parse_settings
from delivery_daemon.generators.discovery import discover
from delivery_daemon.http.limits import RateLimiter
from delivery_daemon.http.serving import serve
from delivery_daemon.logs import configure_logging
from delivery_daemon.reference.softstore import SoftStoreMarketplace
from tests.support.stack import PRODUCT, Stack, StackFactory


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
    limiter = RateLimiter(
        RateLimitSettings(per_second=1, burst=1), {"big": RateLimitSettings(per_second=1, burst=3)}, clock
    )
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
        writer.write(
            b"POST /webhooks/shop HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"id_order":'
        )
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 30)
        writer.close()
        assert status_line.split(b" ")[1] == b"408"


# -- over a real socket: the body cap, a trickling sender, one store's flood beside another store ----------------


async def _raw(stack: Stack) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = stack.url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


async def _answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Status and body of one HTTP/1.1 response (uvicorn sends Content-Length on these JSON answers)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    lines = head.decode("latin-1").split("\r\n")
    length = next(int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:"))
    return int(lines[0].split(" ")[1]), await asyncio.wait_for(reader.readexactly(length), 30)


async def _jobs(stack: Stack) -> int:
    with stack.daemon.engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT count(*) FROM jobs").scalar_one())


async def test_huge_content_length_is_413_before_any_body_is_sent(make_stack: StackFactory) -> None:
    """A 10 GB Content-Length is answered 413 with a JSON reason while not one body byte has been sent."""
    async with make_stack(server={"max_body_bytes": 4096, "body_timeout": 120}) as stack:
        reader, writer = await _raw(stack)
        writer.write(
            b"POST /webhooks/shop HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 10000000000\r\n\r\n"
        )
        await writer.drain()
        status, body = await _answer(reader)  # 120 s body timeout: only the cap can answer this quickly
        writer.close()
        assert status == 413 and "larger than 4096 bytes" in body.decode()
        assert await _jobs(stack) == 0


async def test_chunked_body_over_the_cap_is_413_without_reading_the_rest(make_stack: StackFactory) -> None:
    """A chunked body is refused 413 once it passes the cap, though the sender has not finished (nor ever will)."""
    async with make_stack(server={"max_body_bytes": 4096, "body_timeout": 120}) as stack:
        reader, writer = await _raw(stack)
        # One chunk announced as 16 MB; only 8 KB of it are sent and the terminating chunk never comes.
        writer.write(
            b"POST /webhooks/shop HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n1000000\r\n" + b"[" * 8192
        )
        await writer.drain()
        status, body = await _answer(reader)
        writer.close()
        assert status == 413 and "larger than 4096 bytes" in body.decode()
        assert await _jobs(stack) == 0
        assert (await stack.client.get(f"{stack.url}/healthz")).status_code == 200


async def test_trickling_sender_is_cut_off_after_body_timeout(make_stack: StackFactory) -> None:
    """A sender that keeps sending, one byte at a time, is still answered 408 once server.body_timeout is up."""
    async with make_stack(server={"body_timeout": 0.5}) as stack:
        reader, writer = await _raw(stack)
        writer.write(
            b"POST /webhooks/shop HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2000\r\n\r\n"
        )
        sent = 0

        async def trickle() -> None:
            nonlocal sent
            while sent < 2000:  # 2000 bytes at 50 ms each would take 100 s: never completes within the test
                writer.write(b" ")
                await writer.drain()
                sent += 1
                await asyncio.sleep(0.05)

        trickler = asyncio.create_task(trickle())
        try:
            status, body = await _answer(reader)
        finally:
            trickler.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await trickler
            writer.close()
        assert status == 408 and "not received in time" in body.decode()
        assert 0 < sent < 2000  # it was cut off mid-body, while still sending
        assert await _jobs(stack) == 0


async def test_one_store_flooded_leaves_another_store_accepting(tmp_path: Path) -> None:
    """Over HTTP, a store past its burst gets 429 while a second store's webhooks are still accepted and queued."""
    configure_logging("json", "error", stream=io.StringIO())
    api_key = secrets.token_hex(20)
    market = SoftStoreMarketplace(api_key=api_key)
    market.add_product(PRODUCT, count=100)
    async with serve(market.app) as market_server:
        market.bind(market_server.url)
        store = {
            "marketplace": "softstore",
            "api_url": market.api_base,
            "api_key": api_key,
            "default": {"generator": "pattern"},
        }
        settings = parse_settings(
            {
                "database": {"url": f"sqlite:///{tmp_path / 'd.db'}"},
                "server": {"rate_limit": {"per_second": 0.01, "burst": 2}},
                "stores": [{"name": "shop", **store}, {"name": "other", **store}],
            },
            environ={},
        )
        app = create_app(
            settings,
            marketplaces=default_marketplaces(),
            plugins=dict(discover()),
            clock=ManualClock(),
            start_worker=False,
        )
        async with serve(app) as daemon, httpx.AsyncClient(base_url=daemon.url) as client:
            placed = [await market.place_order(PRODUCT, 1, send_webhook=False) for _ in range(5)]
            assert [(await client.post("/webhooks/shop", json=p.payload)).status_code for p in placed[:3]] == [
                200,
                200,
                429,
            ]
            assert [(await client.post("/webhooks/other", json=p.payload)).status_code for p in placed[3:]] == [
                200,
                200,
            ]
            assert (await client.post("/webhooks/shop", json=placed[2].payload)).status_code == 429  # still empty
            queue = app.state.daemon.queue
            assert [await queue.find("other", p.id_order) is not None for p in placed[3:]] == [True, True]
            assert await queue.find("shop", placed[2].id_order) is None
