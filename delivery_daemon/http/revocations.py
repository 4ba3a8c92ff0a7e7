"""``GET /revocations/{store}/{product}``: the product's signed revocation list, for the seller's applications.

Served on the webhook port, without authentication: the document names no order and no key, only the SHA-256 of each
revoked key, and it is signed, so a copy cannot be altered. Only a product whose generator publishes lists (the
contract's optional ``revocation_list`` hook; shipped: ``signed``) has one; any other store or product is a 404 with
a JSON reason. The list holds every key of the product revoked so far (refunded, disputed, cancelled, revoked or
re-issued orders), from the moment the worker first ran its revocation; see ``docs/operations.md``.

Anybody can ask for it, so each product's document is built (a database read and a signature) at most once per
:data:`FRESH` seconds and served from memory in between: a flood of requests costs the database nothing.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from delivery_daemon.clock import Clock
from delivery_daemon.generators.contract import PublishesRevocations
from delivery_daemon.pipeline.stores import Store
from delivery_daemon.storage.jobs import QueueError
from delivery_daemon.storage.queue import JobQueue

MAX_AGE = 60
"""Seconds a fetched list may be cached (``Cache-Control``): a revocation reaches applications within this much
(plus :data:`FRESH`)."""
FRESH = 5
"""Seconds a built document is served from memory before the database is read again."""


class RevocationParts(Protocol):
    """What the route reads of the running daemon (``app.state.daemon``)."""

    stores: dict[str, Store]
    queue: JobQueue
    clock: Clock


class RevocationLists:
    """The route's endpoint (:meth:`serve`): each product's document, kept :data:`FRESH` seconds by the daemon's
    monotonic clock.

    Only products that publish a list are kept, so the memory is bounded by the configuration. One lock: requests
    that miss together wait for one read instead of each reading the database."""

    def __init__(self) -> None:
        self._kept: dict[tuple[str, str], tuple[float, str]] = {}
        self._lock = asyncio.Lock()

    async def serve(self, request: Request) -> Response:
        daemon: RevocationParts = request.app.state.daemon
        store_name, product_id = request.path_params["store"], request.path_params["product"]
        store = daemon.stores.get(store_name)
        product = store.product(product_id) if store is not None else None
        if product is None or not isinstance(product.generator, PublishesRevocations):
            return JSONResponse(
                {"error": "no revocation list: unknown store or product, or its generator has none"}, 404
            )
        key = (store_name, product_id)
        async with self._lock:
            kept = self._kept.get(key)
            if kept is None or daemon.clock.monotonic() >= kept[0]:
                try:
                    hashes = await daemon.queue.revoked_hashes(store_name, product_id)
                except QueueError:
                    return JSONResponse(
                        {"error": "the database is not available; try again"}, 503, headers={"Retry-After": "5"}
                    )
                kept = (daemon.clock.monotonic() + FRESH, product.generator.revocation_list(product_id, hashes))
                self._kept[key] = kept
        return PlainTextResponse(kept[1] + "\n", headers={"Cache-Control": f"max-age={MAX_AGE}"})


def routes() -> list[Route]:
    """The route, with its own :class:`RevocationLists` (one per app)."""
    return [Route("/revocations/{store}/{product}", RevocationLists().serve, methods=["GET"])]
