"""Step 1 of an order: ``POST /webhooks/{store}``. Check, then commit, then answer.

Order of checks: unknown store (404), body over the cap (413, refused before it is read), wrong content type (415),
then the adapter: unreadable body (400), bad signature (403), refused fields (422). None of these stores anything.
A valid webhook is committed to the queue before the 2xx goes out; the same order again answers 200 with
``"duplicate": true`` and creates nothing (the database's unique constraint decides).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .errors import WebhookRejected
from .queue import QueueError

if TYPE_CHECKING:
    from .app import Daemon

log = structlog.get_logger("delivery_daemon.receive")


class BodyTooLarge(Exception):
    pass


async def read_capped(request: Request, limit: int) -> bytes:
    """The request body, refusing (before reading it) anything that declares or streams more than ``limit``."""
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
    daemon: Daemon = request.app.state.daemon
    name = request.path_params["store"]
    store = daemon.stores.get(name)
    bound = log.bind(store=name)
    try:
        if store is None:
            raise WebhookRejected(404, "unknown store")
        try:
            body = await read_capped(request, daemon.settings.server.max_body_bytes)
        except BodyTooLarge:
            raise WebhookRejected(413, f"body larger than {daemon.settings.server.max_body_bytes} bytes") from None
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json" and not content_type.endswith("+json"):
            raise WebhookRejected(415, "Content-Type must be application/json")
        order = store.marketplace.parse_webhook(request.headers, body)
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
    try:
        result = await daemon.queue.enqueue(order)
    except QueueError as exc:
        # Not stored, so not acknowledged: the marketplace resends on a non-2xx.
        bound.error("webhook.store_failed", order_id=order.order_id, error=str(exc))
        return _error(503, "could not store the order; try again")
    if result.created:
        daemon.worker.wake()
    event = "webhook.accepted" if result.created else "webhook.duplicate"
    bound.info(event, order_id=order.order_id, job_id=result.job_id, product_id=order.product_id)
    daemon.metrics_webhook(name, "accepted" if result.created else "duplicate")
    return JSONResponse({"status": "accepted", "order_id": order.order_id, "duplicate": not result.created})


def routes() -> list[Route]:
    return [Route("/webhooks/{store}", webhook, methods=["POST"])]
