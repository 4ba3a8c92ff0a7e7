"""``python -m bench.client``: the marketplace client's CPU per request, against aiohttp alone, in the same run.

The worker makes two marketplace calls per order (verify, deliver) through ``ApiClient.call``. This measures, in
this process, the CPU each request costs (``time.process_time``; the bench's marketplace runs in its own process):

* ``aiohttp``: a bare ``aiohttp.ClientSession`` request and JSON parse, the floor;
* ``call``: ``ApiClient.call`` over the pinned aiohttp transport, as the daemon sends (``send_read``, no
  ``httpx.Request``; docs/performance.md, item 29);
* ``call_request``: the same call through a transport that only has ``handle_async_request``, so an
  ``httpx.Request`` is built and streamed back (how every call went before item 29).

The three alternate round by round (the order reversed every other round), ``--concurrency`` requests in flight;
the medians and each one's ratio to ``aiohttp`` are printed and written as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from delivery_daemon.marketplaces.base import ApiClient, PinnedOrigin
from delivery_daemon.net.transport import AiohttpTransport

from .processes import start_server

PATH = "/_bench/delivered"
WAYS = ("aiohttp", "call", "call_request")


class RequestOnly(httpx.AsyncBaseTransport):
    """The aiohttp transport without ``send_read``: calls through it build an ``httpx.Request``."""

    def __init__(self, inner: AiohttpTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def _cpu_per_request(one: Callable[[], Awaitable[None]], requests: int, concurrency: int) -> float:
    await asyncio.gather(*(one() for _ in range(concurrency)))  # connections opened, code paths warm
    started = time.process_time()
    for _ in range(max(1, requests // concurrency)):
        await asyncio.gather(*(one() for _ in range(concurrency)))
    return (time.process_time() - started) / (max(1, requests // concurrency) * concurrency) * 1e6


async def _measure(way: str, base: str, requests: int, concurrency: int) -> float:
    headers = {"Authorization": "Bearer bench", "User-Agent": "delivery-daemon"}
    if way == "aiohttp":
        import aiohttp

        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False) as session:

            async def bare() -> None:
                async with session.get(base + PATH, headers=headers) as response:
                    json.loads(await response.read())

            return await _cpu_per_request(bare, requests, concurrency)
    transport: httpx.AsyncBaseTransport = AiohttpTransport()
    if way == "call_request":
        transport = RequestOnly(AiohttpTransport())
    async with ApiClient(
        transport=PinnedOrigin(transport, base), base_url=base, timeout=15, headers={"User-Agent": "delivery-daemon"}
    ) as client:

        async def call() -> None:
            (await client.call("GET", PATH, headers={"Authorization": "Bearer bench"})).json()

        return await _cpu_per_request(call, requests, concurrency)


def client_cpu(workdir: Path, *, requests: int = 8000, concurrency: int = 32, rounds: int = 4) -> dict[str, Any]:
    samples: dict[str, list[float]] = {way: [] for way in WAYS}
    market_spec = {"api_key": secrets.token_hex(20), "product": "bench-key"}
    with start_server("market", market_spec, workdir) as market:
        for round_ in range(rounds):
            for way in WAYS if round_ % 2 == 0 else tuple(reversed(WAYS)):
                samples[way].append(asyncio.run(_measure(way, market.url, requests, concurrency)))
    medians = {way: statistics.median(values) for way, values in samples.items()}
    return {
        "requests": requests,
        "concurrency": concurrency,
        "rounds": rounds,
        "us_per_request": samples,
        "median_us": medians,
        "ratio_to_aiohttp": {way: medians[way] / medians["aiohttp"] for way in WAYS},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.client", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=8000, help="requests per way and round")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--out", default="bench-client.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="delivery-daemon-client-") as tmp:
        result = client_cpu(Path(tmp), requests=args.requests, concurrency=args.concurrency, rounds=args.rounds)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"client CPU per request, {args.concurrency} in flight, median of {args.rounds} rounds")
    for way in WAYS:
        rounds = ", ".join(f"{v:.0f}" for v in result["us_per_request"][way])
        print(
            f"  {way:<13}{result['median_us'][way]:>8.0f} µs   x{result['ratio_to_aiohttp'][way]:.2f} of aiohttp"
            f"   (rounds: {rounds})"
        )
    print(f"results written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
