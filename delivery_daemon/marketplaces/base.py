"""The adapter seam: what the core asks of a marketplace, and of a delivery channel (a sink).

A :class:`MarketplaceType` is passed to the daemon in an explicit list; the core looks one up by the ``marketplace``
key of a store and never imports an adapter by name. ``create`` builds the adapter for one configured store and
raises :class:`~delivery_daemon.errors.ConfigError` (with the key path it was given) when the store is incomplete.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeAlias

import httpx

from delivery_daemon.clock import Clock
from delivery_daemon.config import DeliverySettings, StoreSettings
from delivery_daemon.errors import Retry, WebhookRejected
from delivery_daemon.net.guard import BlockedDestination, NetPolicy
from delivery_daemon.net.transport import AiohttpTransport, pool_limits, read_built, read_response
from delivery_daemon.order import LIMITS, Content, IncomingOrder, MarketplaceOrder, check_order, checked_text, unusable
from delivery_daemon.storage.models import Job


@dataclass(frozen=True)
class AdapterContext:
    """What an adapter gets to build itself: its settings, its key path for errors, and injected I/O."""

    store: StoreSettings
    path: str
    clock: Clock
    delivery: DeliverySettings
    transport: httpx.AsyncBaseTransport | None = None
    policy: NetPolicy = field(default_factory=NetPolicy)
    """Where URLs from config (the outbound webhook) may connect: ``security`` in the settings."""


@dataclass(frozen=True)
class OrderEvent:
    """A signed notice about an order the daemon may already hold: the payment was refunded or disputed.

    The core cancels the order if it is not delivered yet (and remembers it, so a later "paid" webhook for the same
    order delivers nothing), or flags and logs it (``order.refunded`` / ``order.disputed``) if it was.
    """

    store: str
    marketplace: str
    order_id: str
    kind: Literal["refunded", "disputed"]
    product_id: str = ""
    detail: str | None = None
    event_id: str | None = None


@dataclass(frozen=True)
class FulfilNow:
    """The marketplace waits on this very request for the goods and will not ask twice (e.g. Sellix dynamic
    products): the core generates within ``budget`` seconds, stores the result, then answers the keys as
    ``text/plain``, one per line. The same order asked again gets the same keys."""

    order: IncomingOrder
    budget: float


WebhookResult: TypeAlias = IncomingOrder | OrderEvent | FulfilNow | None
"""What :meth:`Marketplace.parse_webhook` returns: an order to queue, an event about an order, a synchronous
fulfilment request, or None when the webhook is valid but asks nothing of the daemon."""


def normalise(result: WebhookResult) -> WebhookResult:
    """``result`` once everything in it that will be stored or used later passes :func:`~delivery_daemon.order.
    check_order` (orders) or the same text rule (events), else WebhookRejected 422 naming the field. Applied by the
    receiver to every adapter's result before anything is committed.

    An event's ``detail`` is free text the adapter composed for the order's history: characters that cannot be
    stored are escaped in it rather than refusing the refund or dispute it describes.
    """
    if isinstance(result, IncomingOrder):
        return check_order(result)
    if isinstance(result, FulfilNow):
        check_order(result.order)
        return result
    if isinstance(result, OrderEvent):
        for name in ("store", "marketplace", "order_id", "product_id"):
            checked_text(getattr(result, name), name, LIMITS[name])
        if result.event_id is not None:
            checked_text(result.event_id, "event_id", LIMITS["event_id"])
        if result.detail is not None and unusable(result.detail) is not None:
            detail = result.detail.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
            return dataclasses.replace(result, detail=detail)
    return result


@dataclass(frozen=True)
class Receipt:
    """A sink's answer to a delivery that went through (``already`` when the marketplace had it before)."""

    outcome: str  # "delivered" | "already"
    http_status: int | None = None
    detail: str | None = None


class Sink(Protocol):
    """A delivery channel. ``send`` raises :class:`~delivery_daemon.errors.Retry` or
    :class:`~delivery_daemon.errors.Dead` when the delivery did not go through."""

    name: str

    async def send(self, job: Job, content: Content) -> Receipt: ...


class Marketplace(Protocol):
    """One store's adapter: verify and normalise webhooks, ask the marketplace about orders, deliver."""

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookResult:
        """Check the signature on the raw body and normalise. Raise WebhookRejected; None means "ignored"."""
        ...

    async def fetch_order(self, job: Job) -> MarketplaceOrder:
        """The marketplace's own view of the order (raise Retry or Dead)."""
        ...

    def sink(self) -> Sink | None:
        """The marketplace's own delivery API, or None when it has none (the store must configure a channel)."""
        ...

    def secrets(self) -> list[str]:
        """Secret strings this adapter holds (API keys, tokens), for the log redactor."""
        ...

    async def aclose(self) -> None: ...


class MarketplaceType(Protocol):
    name: str

    def create(self, context: AdapterContext) -> Marketplace: ...


class PinnedOrigin(httpx.AsyncBaseTransport):
    """A transport that sends only to one origin (scheme, host, port): the store's configured API URL. Anything
    else is :class:`~delivery_daemon.net.guard.BlockedDestination` before a byte leaves, whatever URL an adapter was
    handed (a webhook's ``delivery_url``, a ``Location`` header)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, origin: str) -> None:
        self.inner = inner
        self.origin = origin
        self._origin = _origin(origin)  # parsed once: the request's URL is parsed already (verify and deliver)
        self._prefix = _origin_prefix(origin)  # scheme://authority/ as httpx writes it (None: send_read parses all)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if not url.host or (url.scheme, url.host, url.port) != self._origin:
            raise BlockedDestination(f"refused to connect to {request.url.host}: not the store's API host")
        return await self.inner.handle_async_request(request)

    async def send_read(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        timeouts: Mapping[str, float | None],
    ) -> httpx.Response:
        """The inner transport's :func:`~delivery_daemon.net.transport.read_response` for a URL written as httpx would
        (see :meth:`ApiClient.call`) that starts with the origin's ``scheme://authority/``; any other URL goes
        through :meth:`handle_async_request`, which parses it and refuses it if it is not on the origin."""
        if self._prefix is not None and url.startswith(self._prefix):
            return await read_response(self.inner, method, url, headers, body, timeouts, as_written=True)
        return await read_built(self, method, url, headers, body, timeouts)

    async def aclose(self) -> None:
        await self.inner.aclose()


class ApiClient(httpx.AsyncClient):
    """An adapter's keep-alive client (see :func:`create_client`), plus :meth:`call` for its per-order requests.

    :meth:`call` hands the request straight to the transport, without the client's layers: cookies (never
    wanted from a marketplace API), auth flows, redirect handling (redirects are never followed here anyway) and
    event hooks. Profile of a backlog drain: those layers cost ~70 µs of CPU per request, and with two requests
    per order (verify, deliver) removing them made each order ~15 % cheaper (docs/performance.md, item 21).
    The client's base URL, default headers and timeout apply as they do for :meth:`request`.
    """

    def __init__(
        self, *, transport: httpx.AsyncBaseTransport, base_url: str, timeout: float, headers: Mapping[str, str]
    ) -> None:
        super().__init__(
            base_url=base_url,
            transport=transport,
            follow_redirects=False,
            timeout=httpx.Timeout(timeout),
            headers=dict(headers),
        )
        self._direct = transport
        self._prefix = str(self.base_url).rstrip("/")
        self._defaults = dict(headers)
        self._call_timeout = httpx.Timeout(timeout).as_dict()

    async def call(
        self, method: str, url: str, *, headers: Mapping[str, str] | None = None, json: Any = None
    ) -> httpx.Response:
        """``method url`` (absolute, or a path under the base URL) with the body read; httpx's errors as for
        :meth:`request` (:class:`httpx.HTTPError`), and whatever the transport raises (e.g. BlockedDestination).

        A JSON body is encoded as httpx encodes it. The response's ``request`` may not be set. A URL under the base URL
        written as httpx would write it (see :data:`_AS_WRITTEN`) is handed to the transport as plain values, with
        no ``httpx.Request`` built when the transport can send those (the aiohttp transport can: ~100 µs of CPU
        less per request, docs/performance.md, item 29); any other URL is parsed by httpx first.
        """
        target = url if "://" in url else f"{self._prefix}/{url.lstrip('/')}"
        sent = {**self._defaults, **(headers or {})}
        body = None
        if json is not None:
            body = _encode_json(json)
            sent["Content-Type"] = "application/json"
        as_written = target.startswith(self._prefix) and bool(_AS_WRITTEN.fullmatch(target, len(self._prefix)))
        return await read_response(self._direct, method, target, sent, body, self._call_timeout, as_written=as_written)


_AS_WRITTEN = re.compile(r"(?!.*/\.)/[A-Za-z0-9\-._~!$&'()*+,;=:@/?]*")
"""What may follow the base URL for httpx to leave a URL as it is: RFC 3986's unreserved and reserved characters
without ``%`` (httpx re-encodes a stray one), ``#`` (not sent), ``[]`` (hosts only) and any ``/.`` (httpx removes dot
segments). A property test checks this against httpx (tests/marketplaces/test_marketplace.py)."""


def _encode_json(value: Any) -> bytes:
    """A JSON body as httpx encodes ``json=``."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def create_client(context: AdapterContext, base_url: str = "") -> ApiClient:
    """One keep-alive client per adapter, pinned to ``base_url``'s origin when given. Redirects are never followed:
    a 3xx is an answer, not an instruction."""
    transport = context.transport or AiohttpTransport(pool_limits(100, 20))
    return ApiClient(
        base_url=base_url,
        transport=PinnedOrigin(transport, base_url) if base_url else transport,
        timeout=context.delivery.timeout,
        headers={"User-Agent": "delivery-daemon"},
    )


def transport_retry(exc: httpx.HTTPError) -> Retry:
    """Translate an httpx failure into a Retry whose reason names the failure, never the URL (it holds tokens)."""
    if isinstance(exc, httpx.TimeoutException):
        return Retry(f"timeout ({type(exc).__name__})")
    return Retry(f"connection error ({type(exc).__name__})")


def _origin(url: str) -> tuple[str, str, int | None] | None:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return None
    return (parsed.scheme, parsed.host, parsed.port)


_base_origin = functools.lru_cache(maxsize=256)(_origin)
"""``base`` is a store's configured API URL, the same on every call: parsed once (profile: parsing both URLs of
every webhook was ~5 % of the receiver's CPU). The per-webhook ``url`` is unique and not cached."""


@functools.lru_cache(maxsize=256)
def _origin_prefix(base: str) -> str | None:
    """``scheme://authority/`` of ``base`` as httpx writes it, if parsing that prefix gives ``base``'s origin."""
    parsed = _base_origin(base)
    if parsed is None:
        return None
    url = httpx.URL(base)
    prefix = f"{url.scheme}://{url.netloc.decode('ascii')}/"
    return prefix if _origin(prefix) == parsed else None


def url_host(url: str) -> str | None:
    """The host of ``url`` for a log line, or None when it has none or does not parse (never raises)."""
    if "://" not in url:
        return None
    try:
        host = httpx.URL(url).host
    except (httpx.InvalidURL, TypeError, ValueError):
        return None
    return host if unusable(host) is None else None


_PLAIN = re.compile(r"[!-~]*")
"""Printable ASCII without spaces: a path httpx parses without error."""


def same_origin(url: str, base: str) -> bool:
    """True when ``url`` has the scheme, host and port of ``base``.

    A URL that starts with ``base``'s ``scheme://authority/`` and goes on in printable ASCII has that origin
    (the ``/`` ends the authority), so it is accepted without parsing (profile: parsing each webhook's
    ``delivery_url`` was ~5 % of the receiver's CPU); anything else is parsed and compared.
    """
    prefix = _origin_prefix(base)
    if prefix is not None and url.startswith(prefix) and _PLAIN.fullmatch(url, len(prefix)):
        return True
    a, b = _origin(url), _base_origin(base)
    return a is not None and a == b and bool(a[1])


def load_object(body: bytes) -> dict[str, Any]:
    """A webhook body as a JSON object, or WebhookRejected 400 (shared by every adapter)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise WebhookRejected(400, "body is not valid JSON") from None
    if not isinstance(data, dict):
        raise WebhookRejected(400, "body must be a JSON object")
    return data


def message_of(response: httpx.Response) -> str:
    """The marketplace's ``message`` (or a short body excerpt) for the order's history."""
    try:
        data: Any = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return str(data["message"])[:500]
    return response.reason_phrase
