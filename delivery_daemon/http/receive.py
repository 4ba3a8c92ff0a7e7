"""Step 1 of an order: ``POST /webhooks/{store}``. Check, then commit, then answer.

Order of checks: unknown store (404), body over the cap (413, refused before it is read), wrong content type (415:
JSON, unless the adapter is :class:`~delivery_daemon.marketplaces.optional.UrlAuthenticated` and names its own, as
Gumroad's form-encoded Ping; such an adapter also gets the URL's query, where its token is), then the adapter:
unreadable body (400), bad signature (403), refused fields (422), then the shared rule every adapter's result must
pass (:func:`~delivery_daemon.marketplaces.base.normalise`: a field that cannot be stored or used later is a 422
naming it). None of these stores anything.
A valid webhook is committed to the queue before the 2xx goes out; the same order again answers 200 with
``"duplicate": true`` and creates nothing (the database's unique constraint decides).

The adapter's result decides what happens (the core names no marketplace):

* an :class:`~delivery_daemon.order.IncomingOrder` is queued (above) — or stored ``held`` (still a 2xx, logged
  ``order.held``) when its store delivers by email and the buyer email it carries is not exactly one mailbox
  (:mod:`delivery_daemon.recipient`);
* an :class:`~delivery_daemon.marketplaces.base.OrderEvent` (refund, dispute) marks the order: cancelled if no
  worker holds it and it is not delivered, flagged and logged (``order.refunded`` / ``order.disputed``) if it was
  delivered, and pending if a worker holds it (the worker settles it, see
  :meth:`~delivery_daemon.storage.queue.JobQueue.transition`). An adapter whose events name the payment rather than
  the order (:class:`~delivery_daemon.marketplaces.optional.ResolvesEvents`) is asked for the order first: none is
  answered ``ignored``; a marketplace that cannot be asked is answered 503 (logged ``webhook.resolve_failed``), so
  it resends;
* a :class:`~delivery_daemon.marketplaces.base.FulfilNow` is answered synchronously with the keys as ``text/plain``
  (:mod:`delivery_daemon.pipeline.fulfil`).

A result carrying an ``event_id`` already handled for the store (:mod:`delivery_daemon.storage.events`) is answered 200
``{"status": "duplicate"}`` and changes nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from typing import Protocol, cast

import structlog
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from delivery_daemon.config import Settings
from delivery_daemon.errors import BodyTooLarge, Held, MarketplaceError, Retry, WebhookRejected
from delivery_daemon.http.limits import RateLimiter
from delivery_daemon.http.metrics import Metrics
from delivery_daemon.marketplaces.base import FulfilNow, OrderEvent, WebhookResult, normalise
from delivery_daemon.marketplaces.optional import ResolvesEvents, UrlAuthenticated, accepted_body
from delivery_daemon.order import IncomingOrder
from delivery_daemon.pipeline.fulfil import fulfil_now
from delivery_daemon.pipeline.stores import Store
from delivery_daemon.pipeline.worker import Worker
from delivery_daemon.recipient import recipient
from delivery_daemon.storage.events import EventLog
from delivery_daemon.storage.jobs import MarkedOrder, QueueError
from delivery_daemon.storage.queue import JobQueue

log = structlog.get_logger("delivery_daemon.http.receive")


class ReceiverParts(Protocol):
    """What the webhook route reads of the running daemon (``app.state.daemon``, a
    :class:`~delivery_daemon.compose.Daemon`)."""

    settings: Settings
    stores: dict[str, Store]
    queue: JobQueue
    worker: Worker
    limiter: RateLimiter | None
    generator_slots: asyncio.Semaphore | None
    metrics: Metrics

    def metrics_webhook(self, store: str, result: str) -> None:
        """Count a webhook's result for the store (``_unknown`` for a store that is not configured)."""


async def read_capped(request: Request, limit: int, within: float | None = None) -> bytes:
    """The request body, refusing (before reading it) anything that declares or streams more than ``limit``.

    A body that takes longer than ``within`` seconds to arrive is refused with 408 (a slow sender must not hold
    a connection and a buffer for as long as it likes)."""
    if within is not None:
        try:
            # asyncio.timeout, not anyio.fail_after: anyio's cancel scope cost ~5 % of the receiver's CPU (profile),
            # and the server runs on asyncio (uvicorn) anyway.
            async with asyncio.timeout(within):
                return await read_capped(request, limit)
        except TimeoutError:
            raise WebhookRejected(408, "request body not received in time") from None
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise BodyTooLarge
        except ValueError:
            raise WebhookRejected(400, "invalid Content-Length") from None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _error(status: int, reason: str) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status)


async def webhook(request: Request) -> Response:
    daemon: ReceiverParts = request.app.state.daemon
    name = request.path_params["store"]
    store = daemon.stores.get(name)
    bound = log.bind(store=name)
    try:
        if store is None:
            raise WebhookRejected(404, "unknown store")
        wait = daemon.limiter.check(name) if daemon.limiter is not None else None
        if wait is not None:
            bound.warning("webhook.rate_limited", retry_after_s=round(wait, 3))
            daemon.metrics_webhook(name, "rejected_429")
            return JSONResponse(
                {"error": "too many webhooks for this store; retry later"},
                status_code=429,
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
        try:
            body = await read_capped(
                request, daemon.settings.server.max_body_bytes, daemon.settings.server.body_timeout
            )
        except BodyTooLarge:
            raise WebhookRejected(413, f"body larger than {daemon.settings.server.max_body_bytes} bytes") from None
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        wanted = accepted_body(store.marketplace, content_type)
        if wanted is not None:
            raise WebhookRejected(415, f"Content-Type must be {wanted}")
        # An adapter authenticated by its URL (Gumroad) gets the query too (its token).
        # hasattr, not isinstance: a runtime-checkable protocol costs ~60 µs a check, on every webhook.
        by_url = cast(UrlAuthenticated, store.marketplace) if hasattr(store.marketplace, "parse_request") else None
        try:
            # normalise: whatever the adapter, nothing is committed that cannot be stored and used later (422).
            order: WebhookResult = normalise(
                by_url.parse_request(request.headers, request.query_params, body)
                if by_url is not None
                else store.marketplace.parse_webhook(request.headers, body)
            )
        except RecursionError:
            # json.loads raises this (not ValueError) on deep nesting; hostile input, for every adapter alike.
            raise WebhookRejected(400, "body is nested too deeply") from None
    except WebhookRejected as exc:
        bound.warning("webhook.rejected", status=exc.status, reason=exc.reason)
        daemon.metrics_webhook(name, f"rejected_{exc.status}")
        return _error(exc.status, exc.reason)
    except ClientDisconnect:
        return Response(status_code=400)
    if order is None:
        bound.info("webhook.ignored")
        daemon.metrics_webhook(name, "ignored")
        return JSONResponse({"status": "ignored"})
    assert store is not None
    events = EventLog(daemon.queue)
    event_id = None if isinstance(order, FulfilNow) else order.event_id
    try:
        if event_id is not None and await events.seen(name, event_id):
            bound.info("webhook.duplicate_event", event_id=event_id)
            daemon.metrics_webhook(name, "duplicate")
            return JSONResponse({"status": "duplicate", "duplicate": True})
        response = await _handle(daemon, store, order, bound)
        if event_id is not None and response.status_code < 300:
            await events.record(name, event_id)
    except QueueError as exc:
        # Not stored, so not acknowledged: the marketplace resends on a non-2xx.
        bound.error("webhook.store_failed", error=str(exc))
        return _error(503, "could not store the order; try again")
    return response


async def _handle(
    daemon: ReceiverParts,
    store: Store,
    result: IncomingOrder | OrderEvent | FulfilNow,
    bound: structlog.typing.FilteringBoundLogger,
) -> Response:
    if isinstance(result, OrderEvent):
        if isinstance(store.marketplace, ResolvesEvents):
            try:
                resolved = await store.marketplace.resolve_event(result)
            except (Retry, MarketplaceError) as exc:
                reason = exc.reason if isinstance(exc, Retry) else str(exc)
                bound.warning("webhook.resolve_failed", order_id=result.order_id, kind=result.kind, reason=reason)
                daemon.metrics_webhook(store.name, "rejected_503")
                return _error(503, "could not ask the marketplace which order this is about; try again")
            if resolved is None:
                bound.info("webhook.ignored", order_id=result.order_id, kind=result.kind)
                daemon.metrics_webhook(store.name, "ignored")
                return JSONResponse({"status": "ignored"})
            marked = normalise(resolved)
            assert isinstance(marked, OrderEvent)
            return await _mark(daemon, marked, bound)
        return await _mark(daemon, result, bound)
    if isinstance(result, FulfilNow):
        answer = await fulfil_now(daemon.queue, store, result, slots=daemon.generator_slots)
        daemon.metrics_webhook(store.name, f"fulfil_{answer.status}")
        if answer.status != 200:
            return _error(answer.status, answer.reason or "not available")
        return PlainTextResponse("\n".join(answer.keys))
    order = result
    try:
        recipient(store.settings, order.buyer_email)
    except Held as exc:  # stored for the operator, answered 2xx: the marketplace must not resend it
        order = dataclasses.replace(order, held=exc.reason)
    enqueued = await daemon.worker.enqueue(order, store)  # straight to this daemon's worker when it has a slot
    event = "webhook.accepted" if enqueued.created else "webhook.duplicate"
    bound.info(event, order_id=order.order_id, job_id=enqueued.job_id, product_id=order.product_id)
    daemon.metrics_webhook(store.name, "accepted" if enqueued.created else "duplicate")
    body: dict[str, object] = {"status": "accepted", "order_id": order.order_id, "duplicate": not enqueued.created}
    if enqueued.created and order.held is not None:
        bound.warning("order.held", order_id=order.order_id, job_id=enqueued.job_id, step="receive", reason=order.held)
        body["held"] = True
    return JSONResponse(body)


async def _mark(daemon: ReceiverParts, event: OrderEvent, bound: structlog.typing.FilteringBoundLogger) -> Response:
    reason = f"{event.kind}" + (f": {event.detail}" if event.detail else "")
    outcome = await daemon.queue.mark(
        MarkedOrder(
            store=event.store,
            order_id=event.order_id,
            marketplace=event.marketplace,
            product_id=event.product_id,
            kind=event.kind,
            reason=reason[:500],
        )
    )
    flagged = outcome == "flagged"
    # A refund or dispute after delivery needs the seller's attention (the keys are out): a warning, not info.
    (bound.warning if flagged else bound.info)(
        f"order.{event.kind}", order_id=event.order_id, outcome=outcome, flagged=flagged, detail=event.detail
    )
    daemon.metrics_webhook(event.store, event.kind)
    if flagged:
        daemon.metrics.order_flagged(event.store, event.kind)
    return JSONResponse({"status": outcome, "order_id": event.order_id})


def routes() -> list[Route]:
    return [Route("/webhooks/{store}", webhook, methods=["POST"])]
