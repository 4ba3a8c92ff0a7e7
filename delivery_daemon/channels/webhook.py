"""The ``webhook`` delivery channel: the order's content POSTed to the seller's own system (URL from config only),
signed with Standard Webhooks headers (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``).

Body (``application/json``)::

    {"type": "order.delivered", "timestamp": <job created, unix s>,
     "data": {"store", "marketplace", "order_id", "product_id", "quantity", "buyer_email", "keys", "text",
              "download"}}

When an order's content is revoked (refund, dispute, ``orders revoke`` or ``orders reissue``, see
:mod:`delivery_daemon.pipeline.revoke`), the same endpoint gets, signed the same way::

    {"type": "order.revoked", "timestamp": <revocation recorded, unix s>,
     "data": {"store", "marketplace", "order_id", "product_id", "quantity", "buyer_email", "reason", "issue", "keys"}}

``reason`` is refunded, disputed, cancelled, revoked or reissued; ``issue`` counts the order's contents (0 for the
first; a re-issued order's new content is delivered as ``order.delivered`` with a new ``webhook-id``).

The body and the ``webhook-id`` are the same on every attempt (the receiver deduplicates on the id); only the
timestamp header and signature are fresh. Answers: 2xx delivered; 410 Gone is ``Dead`` (the endpoint is gone, as the
specification says); anything else, and any transport error, is retried on the daemon's schedule
(``Retry-After`` honoured). Redirects are not followed. The URL and the secret never reach a log line.

The URL comes from config, so connections go through :mod:`~delivery_daemon.net.guard`: a host that resolves to a
loopback, private, link-local or metadata address is refused (``security.allow_private_networks`` /
``security.allowed_networks`` opt in) and the job is ``Dead`` without the endpoint ever being contacted, logged as
``security.destination_refused``. An injected test ``transport`` is guarded too (by host, after resolution).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import httpx
import structlog

from delivery_daemon.backoff import parse_retry_after
from delivery_daemon.clock import Clock
from delivery_daemon.config import OutboundWebhookSettings, whsec_key
from delivery_daemon.errors import Dead, Retry
from delivery_daemon.marketplaces.base import AdapterContext, Receipt, transport_retry
from delivery_daemon.net.guard import BlockedDestination, guarded_client
from delivery_daemon.net.signatures import standard_headers
from delivery_daemon.order import Content
from delivery_daemon.storage.models import Job

log = structlog.get_logger("delivery_daemon.channels.webhook")


def message_id(job: Job, event: str = "order.delivered", issue: int | None = None) -> str:
    """Stable per order, content (``jobs.issue``: a re-issued order's new content is a new message) and event type,
    so the seller's system can deduplicate retries. The first delivery's id is the one earlier releases sent."""
    seed = f"{job.store}\0{job.order_id}"
    issue = job.issue if issue is None else issue
    if issue:
        seed += f"\0{issue}"
    if event != "order.delivered":
        seed += f"\0{event}"
    return "msg_" + hashlib.sha256(seed.encode()).hexdigest()[:32]


def _event(kind: str, timestamp: float, job: Job, **data: object) -> bytes:
    """A signed event's body: ``type``, ``timestamp`` and the order's fields plus ``data``, as compact sorted JSON
    (the same bytes on every attempt)."""
    order = {
        "store": job.store,
        "marketplace": job.marketplace,
        "order_id": job.order_id,
        "product_id": job.product_id,
        "quantity": job.quantity,
        "buyer_email": job.buyer_email,
    }
    return json.dumps(
        {"type": kind, "timestamp": int(timestamp), "data": {**order, **data}}, separators=(",", ":"), sort_keys=True
    ).encode()


def message_body(job: Job, content: Content) -> bytes:
    return _event(
        "order.delivered",
        job.created_at,
        job,
        keys=list(content.keys),
        text=content.text,
        download=content.download,
    )


@dataclass(frozen=True)
class RevokedContent:
    """One content of an order being revoked: which ``issue``, why (``reason``), when (``at``) and its ``keys``."""

    issue: int
    reason: str
    at: float
    keys: tuple[str, ...]


def revoked_body(job: Job, revoked: RevokedContent) -> bytes:
    """The ``order.revoked`` event's body (see the module docstring)."""
    return _event("order.revoked", revoked.at, job, reason=revoked.reason, issue=revoked.issue, keys=list(revoked.keys))


class WebhookDelivery:
    """POSTs each order's content to the seller's endpoint."""

    name = "webhook"

    def __init__(self, settings: OutboundWebhookSettings, context: AdapterContext) -> None:
        """Raises ValueError if the secret is not a ``whsec_`` key."""
        self.url = settings.url
        self._secret = settings.secret.get_secret_value()
        self._key = whsec_key(self._secret)
        self._context = context
        self._clock: Clock = context.clock
        self._http: httpx.AsyncClient | None = None

    def secrets(self) -> list[str]:
        return [self._secret, self.url]

    def destinations(self) -> dict[str, str]:
        """The configured URL this channel connects to, by option key (checked at start-up)."""
        return {"url": self.url}

    def _client(self) -> httpx.AsyncClient:
        """The channel's one keep-alive client, guarded by the store's network policy (an injected test transport
        included), made on first use."""
        if self._http is None or self._http.is_closed:
            self._http = guarded_client(
                self._context.policy, timeout=self._context.delivery.timeout, transport=self._context.transport
            )
        return self._http

    async def aclose(self) -> None:
        """Close the keep-alive client (at shutdown, or when a reload replaced the store)."""
        if self._http is not None:
            await self._http.aclose()

    async def send(self, job: Job, content: Content) -> Receipt:
        return await self._post(job, message_body(job, content), message_id(job))

    async def revoke(self, job: Job, revoked: RevokedContent) -> Receipt:
        """Tell the seller's endpoint that ``revoked`` (one content of ``job``) is taken back: an ``order.revoked``
        event, signed like a delivery, the same bytes and ``webhook-id`` on every attempt."""
        return await self._post(job, revoked_body(job, revoked), message_id(job, "order.revoked", issue=revoked.issue))

    async def _post(self, job: Job, body: bytes, msg_id: str) -> Receipt:
        headers = {
            "Content-Type": "application/json",
            **standard_headers(self._key, msg_id, int(self._clock.now()), body),
        }
        # One client for every attempt: a flash sale delivers hundreds of orders a second to the same endpoint, and
        # a client per attempt paid a TLS context and a TCP handshake each time.
        try:
            response = await self._client().post(self.url, content=body, headers=headers)
        except BlockedDestination as exc:  # refused before connecting: retrying cannot help, config must change
            log.warning(
                "security.destination_refused",
                store=job.store,
                order_id=job.order_id,
                channel=self.name,
                reason=str(exc),
            )
            raise Dead(f"the seller's endpoint was not contacted: {exc}") from None
        except httpx.HTTPError as exc:
            raise transport_retry(exc) from None
        status = response.status_code
        if 200 <= status < 300:
            return Receipt("delivered", status)
        if status == 410:
            raise Dead("the seller's endpoint answered 410 Gone", http_status=status)
        after = parse_retry_after(response.headers.get("Retry-After"), self._clock.now())
        raise Retry(f"the seller's endpoint answered {status}", after=after, http_status=status)
