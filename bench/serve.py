"""The server processes of a benchmark run: ``python -m bench.serve daemon|baseline|unstored|inline|market SPEC``.

Each runs under the same uvicorn settings on a socket bound here and prints ``READY <port>`` once accepting.
``baseline`` is the bare Starlette endpoint that only reads and parses the JSON body: the cost of the HTTP stack
itself, which the daemon's ingest figure is compared with. ``unstored`` is the daemon with its enqueue answered
without the database: not a mode of the daemon (it would break its one promise), a measurement of what taking a
webhook costs besides storing it. ``market`` is the reference SoftStore marketplace plus
two bench-only routes: ``POST /_bench/orders {"count"}`` places orders without sending webhooks and returns their
signed webhook bodies; ``POST /_bench/accepted {"ids"}`` returns when each delivery was accepted (epoch seconds);
``GET /_bench/delivered`` counts accepted deliveries. ``inline`` is the Python peer of ``bench/versus.py``
(:mod:`bench.inline`).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

UVICORN = {"log_level": "warning", "access_log": False, "lifespan": "on", "backlog": 2048}
"""Server settings shared by the daemon and the baseline. Both also run as ``delivery-daemon serve`` does: on
asyncio's event loop, with the header-deadline protocol over httptools when it is installed (see :func:`main`)."""


def baseline_app() -> Starlette:
    async def webhook(request: Request) -> Response:
        data = json.loads(await request.body())
        return JSONResponse({"status": "accepted", "order_id": data.get("id_order"), "duplicate": False})

    return Starlette(routes=[Route("/webhooks/{store}", webhook, methods=["POST"])])


def daemon_app(spec: dict[str, Any]) -> Starlette:
    from delivery_daemon.compose import create_app, default_marketplaces
    from delivery_daemon.config import parse_settings
    from delivery_daemon.generators.discovery import discover
    from delivery_daemon.logs import configure_logging

    settings = parse_settings(spec["settings"], environ={})
    log_stream = open(spec.get("log_file", "/dev/null"), "a")  # noqa: SIM115  (lives as long as the process)
    configure_logging("json", settings.logging.level, stream=log_stream)
    return create_app(
        settings,
        marketplaces=default_marketplaces(),
        plugins=discover(),
        start_worker=spec.get("start_worker", True),
    )


def unstored_app(spec: dict[str, Any]) -> Starlette:
    """:func:`daemon_app` whose queue answers every enqueue as a new job without storing anything (bench only)."""
    import itertools

    from delivery_daemon.order import IncomingOrder
    from delivery_daemon.storage.jobs import Enqueued
    from delivery_daemon.storage.queue import JobQueue

    ids = itertools.count(1)

    async def enqueue(self: JobQueue, order: IncomingOrder, lease: object = None) -> Enqueued:
        return Enqueued(job_id=next(ids), created=True)

    JobQueue.enqueue = enqueue  # type: ignore[method-assign]  # this process only: it serves nothing else
    return daemon_app(spec)


def market_app(spec: dict[str, Any]) -> tuple[Starlette, Any]:
    import io

    from delivery_daemon.logs import configure_logging
    from delivery_daemon.reference.softstore import SoftStoreMarketplace

    configure_logging("json", "error", stream=io.StringIO())
    market = SoftStoreMarketplace(api_key=spec["api_key"])
    market.add_product(spec["product"], count=10_000_000)

    async def orders(request: Request) -> Response:
        count = int((await request.json())["count"])
        placed = [await market.place_order(spec["product"], 1, send_webhook=False) for _ in range(count)]
        market.requests.clear()  # the record of every request is test help; do not let it grow here
        return JSONResponse([order.payload for order in placed])

    async def accepted(request: Request) -> Response:
        ids = (await request.json())["ids"]
        found = {i: record.at for i in ids if (record := market.accepted(i)) is not None}
        market.requests.clear()
        market.delivery_log.clear()
        return JSONResponse(found)

    async def delivered(request: Request) -> Response:
        return JSONResponse({"accepted": len(market._accepted)})

    routes = [
        Route("/_bench/orders", orders, methods=["POST"]),
        Route("/_bench/accepted", accepted, methods=["POST"]),
        Route("/_bench/delivered", delivered, methods=["GET"]),
    ]
    market.app.router.routes[:0] = routes
    return market.app, market


async def main(kind: str, spec: dict[str, Any]) -> None:
    from delivery_daemon.http.protocol import header_deadline_protocol
    from delivery_daemon.http.serving import serve, settle_heap

    market = None
    if kind == "market":
        app, market = market_app(spec)
    else:
        from .inline import inline_app

        apps = {
            "baseline": lambda _spec: baseline_app(),
            "daemon": daemon_app,
            "unstored": unstored_app,
            "inline": inline_app,
        }
        app = apps[kind](spec)
    options: dict[str, Any] = dict(UVICORN)
    if market is None:  # the daemon and the baseline: the protocol delivery-daemon serve uses (runner._server)
        options["http"] = header_deadline_protocol(10.0)  # server.header_timeout's default
    async with serve(app, "127.0.0.1", int(spec.get("port", 0)), **options) as running:
        if market is not None:
            market.bind(running.url)
        settle_heap()  # as delivery-daemon serve does once it has started (runner.Runner._announce)
        print(f"READY {running.port}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        import signal

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()


def write_census(path: str) -> None:
    """How many modules of each top-level package this process imported, most first, as JSON (bench/memory.py)."""
    with open(path, "w") as handle:
        json.dump(dict(Counter(name.partition(".")[0] for name in list(sys.modules)).most_common()), handle)


if __name__ == "__main__":
    kind, path = sys.argv[1], sys.argv[2]
    with open(path) as handle:
        config = json.load(handle)
    if kind != "market":
        # delivery-daemon serve runs asyncio.run(): so do the daemon and the baseline (with uvloop the receiver was
        # ~20 % slower here, and it holds ~10 MB more; docs/performance.md, item 17).
        asyncio.run(main(kind, config))
        if "census_file" in config:
            write_census(config["census_file"])
    else:
        try:  # the other side of the wire: as fast as it can be, so it disturbs the measured processes less
            import uvloop

            uvloop.run(main(kind, config))
        except ImportError:
            asyncio.run(main(kind, config))
