"""An httpx transport whose connections are aiohttp's: the marketplace clients' default.

Why not httpx's own pool: with the worker's 16 requests in flight, httpcore's pool spent ~1.5 ms of CPU per request
on loopback (it checks every pooled connection for expiry on each request, through anyio's per-call attribute
dictionaries), against ~0.3 ms through this transport and 0.07 ms for aiohttp alone (docs/performance.md, item 12).
The adapters keep httpx's API — ``httpx.AsyncClient``, ``MockTransport`` in tests, ``PinnedOrigin`` on top — only
the bytes on the wire go through aiohttp's connector.

Contract, as any httpx transport:

* the request is sent as httpx built it (URL already percent-encoded, headers, bytes); redirects are never
  followed and bodies are not decompressed here (httpx decodes them);
* httpx's timeouts apply: ``pool`` to getting a connection, ``connect`` to opening one, ``read`` between reads
  (aiohttp has no write timeout; our request bodies are small). A wait for a pooled connection that runs out is
  reported as ``ConnectTimeout`` (aiohttp does not tell it apart from connecting);
* of httpx's ``Limits``, ``max_connections`` and ``keepalive_expiry`` apply; ``max_keepalive_connections`` does not
  (aiohttp keeps every idle connection until it expires);
* aiohttp's failures become httpx's (:func:`translate`): a refused connection or a DNS failure is a
  ``ConnectError``, a timeout a ``ConnectTimeout``/``ReadTimeout``, a dropped or malformed answer a
  ``RemoteProtocolError``/``ReadError``. The messages name the failure, never the URL (it may hold a token).

:meth:`AiohttpTransport.send_read` is the same request without the httpx objects: the marketplaces' per-order
calls (:meth:`~delivery_daemon.marketplaces.base.ApiClient.call`) go through :func:`read_response`, which takes it when
the transport has it and builds the ``httpx.Request`` otherwise (``MockTransport`` in tests).

aiohttp is imported on the first request, not at start: an idle daemon does not hold it (~12 MB).
The ``httpx-aiohttp`` package does the same job but reports refused connections as timeouts (it maps aiohttp's
connection-error base class first), which would mislabel every "connection refused" retry in the history.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol, cast

import httpx

if TYPE_CHECKING:
    import aiohttp

CHUNK = 64 * 1024

KEEPALIVE_EXPIRY = 4.0
"""Seconds an idle pooled connection is kept for reuse: below the 5 s after which uvicorn and Node.js (the servers
marketplace APIs and sellers' endpoints most often run) close an idle connection. At 5 s, as before, a request could
go out on a connection the server was closing: it failed as ``RemoteProtocolError`` and the delivery waited for its
first retry (tests/storage/test_stock_pool.py hit it after an idle pause). httpx's default is 5 s, aiohttp's 15 s."""


def pool_limits(max_connections: int, max_keepalive_connections: int) -> httpx.Limits:
    """httpx ``Limits`` for an outbound pool, with :data:`KEEPALIVE_EXPIRY`."""
    return httpx.Limits(
        max_connections=max_connections,
        max_keepalive_connections=max_keepalive_connections,
        keepalive_expiry=KEEPALIVE_EXPIRY,
    )


@contextlib.contextmanager
def translate(request: httpx.Request | None) -> Iterator[None]:
    """Re-raise aiohttp's (and asyncio's) transport failures as the httpx exception that means the same
    (carrying ``request`` when there is one: :meth:`AiohttpTransport.send_read` builds none)."""
    import aiohttp  # here and below: on the first request, not at start (an idle daemon does not hold ~12 MB)

    try:
        yield
    except aiohttp.ConnectionTimeoutError:
        raise httpx.ConnectTimeout("timed out connecting", request=request) from None
    except (aiohttp.ServerTimeoutError, TimeoutError):
        raise httpx.ReadTimeout("timed out waiting for the answer", request=request) from None
    except aiohttp.ClientConnectorError as exc:  # DNS failure, refused, unreachable
        raise httpx.ConnectError(
            f"cannot connect: {exc.os_error.strerror or type(exc.os_error).__name__}", request=request
        ) from None
    except aiohttp.ServerDisconnectedError:
        raise httpx.RemoteProtocolError("server disconnected without a complete answer", request=request) from None
    except aiohttp.ClientResponseError as exc:  # an answer that is not HTTP/1.1
        raise httpx.RemoteProtocolError(f"malformed answer ({type(exc).__name__})", request=request) from None
    except aiohttp.ClientConnectionResetError:  # e.g. a kept-alive connection the server had closed
        raise httpx.ReadError("connection reset by the server", request=request) from None
    except aiohttp.ClientPayloadError:
        raise httpx.ReadError("the answer's body was cut off", request=request) from None
    except aiohttp.ClientOSError as exc:
        raise httpx.ReadError(f"connection failed: {exc.strerror or type(exc).__name__}", request=request) from None
    except aiohttp.ClientError as exc:
        raise httpx.TransportError(f"request failed ({type(exc).__name__})", request=request) from None


class _Body(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with translate(self._request):
            async for chunk in self._response.content.iter_chunked(CHUNK):
                yield chunk

    async def aclose(self) -> None:
        self._response.release()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Keep-alive HTTP/1.1 over one aiohttp connector, created on the first request (it needs the running loop)."""

    def __init__(self, limits: httpx.Limits | None = None) -> None:
        self.limits = limits or pool_limits(100, 20)
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        import aiohttp

        connector = aiohttp.TCPConnector(
            limit=self.limits.max_connections or 0,
            ssl=httpx.create_ssl_context(),
            keepalive_timeout=KEEPALIVE_EXPIRY if (expiry := self.limits.keepalive_expiry) is None else expiry,
        )
        # Cookies are not kept: an adapter's calls are independent (httpx's client has its own jar if wanted).
        return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False)

    async def _request(
        self,
        method: str,
        url: str,
        headers: Iterable[tuple[str, str]],
        body: bytes | None,
        timeouts: Mapping[str, float | None],
    ) -> aiohttp.ClientResponse:
        """Send; ``url`` is absolute and percent-encoded already (sent as it is), ``timeouts`` as httpx's."""
        import aiohttp
        import yarl

        if self._session is None:
            self._session = self._open()
        return await self._session.request(
            method,
            yarl.URL(url, encoded=True),
            headers=list(headers),
            data=body or None,
            allow_redirects=False,
            compress=False,
            skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
            timeout=aiohttp.ClientTimeout(
                total=None,
                connect=timeouts.get("pool"),
                sock_connect=timeouts.get("connect"),
                sock_read=timeouts.get("read"),
            ),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout: dict[str, Any] = request.extensions.get("timeout", {})
        body = await request.aread()  # the bytes httpx built (JSON, form); read already for all but streams
        with translate(request):
            response = await self._request(
                request.method, str(request.url), request.headers.multi_items(), body, timeout
            )
        return httpx.Response(
            response.status,
            headers=list(response.raw_headers),
            stream=_Body(response, request),
            request=request,
            extensions=_extensions(response),
        )

    async def send_read(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        timeouts: Mapping[str, float | None],
    ) -> httpx.Response:
        """What :meth:`handle_async_request` answers for the ``httpx.Request`` these would make, body read, without
        making one (~100 µs of CPU less per request: docs/performance.md, item 29).

        ``url`` must be absolute and already as httpx would write it (it is sent as it is: see
        :func:`read_response`); ``headers`` are sent as given, plus ``Host`` and ``Content-Length``. Failures are
        httpx's, as for :meth:`handle_async_request`, without a request attached; so is the response.
        """
        with translate(None):
            response = await self._request(method, url, headers.items(), body, timeouts)
            try:
                content = await response.read()
            finally:
                response.release()
        # stream=, not content=: httpx then adds no Content-Length of its own. read() decodes it as for a stream.
        answer = httpx.Response(
            response.status,
            headers=list(response.raw_headers),
            stream=httpx.ByteStream(content),
            extensions=_extensions(response),
        )
        answer.read()
        return answer

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


def _extensions(response: aiohttp.ClientResponse) -> dict[str, Any]:
    extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
    if response.reason:
        extensions["reason_phrase"] = response.reason.encode("latin-1", "replace")
    return extensions


class ReadingTransport(Protocol):
    """A transport that can send a request given as plain values, body read (see :meth:`AiohttpTransport.send_read`)."""

    async def send_read(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        timeouts: Mapping[str, float | None],
    ) -> httpx.Response: ...


async def read_built(
    transport: httpx.AsyncBaseTransport,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes | None,
    timeouts: Mapping[str, float | None],
) -> httpx.Response:
    """``method url`` as an ``httpx.Request`` through ``transport``, the answer's body read and the stream closed.
    The response's ``request`` is whatever the transport set (callers of :func:`read_response` must not use it)."""
    request = httpx.Request(
        method, url, headers=headers, content=body, extensions={"timeout": dict(timeouts)}
    )  # a dict of its own: transports may add to it
    response = await transport.handle_async_request(request)
    try:
        await response.aread()
    finally:
        await response.aclose()
    return response


async def read_response(
    transport: httpx.AsyncBaseTransport,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes | None,
    timeouts: Mapping[str, float | None],
    *,
    as_written: bool,
) -> httpx.Response:
    """``method url`` through ``transport``, the answer's body read: by the transport's own ``send_read`` when it
    has one and ``as_written`` (the caller knows ``url`` is already what httpx would make of it), else through an
    ``httpx.Request`` (:func:`read_built`). Both send the same bytes and answer alike."""
    if as_written and hasattr(transport, "send_read"):
        return await cast(ReadingTransport, transport).send_read(method, url, headers, body, timeouts)
    return await read_built(transport, method, url, headers, body, timeouts)
