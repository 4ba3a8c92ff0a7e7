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

aiohttp is imported on the first request, not at start: an idle daemon does not hold it (~12 MB).
The ``httpx-aiohttp`` package does the same job but reports refused connections as timeouts (it maps aiohttp's
connection-error base class first), which would mislabel every "connection refused" retry in the history.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    import aiohttp

CHUNK = 64 * 1024


@contextlib.contextmanager
def translate(request: httpx.Request) -> Iterator[None]:
    """Re-raise aiohttp's (and asyncio's) transport failures as the httpx exception that means the same."""
    import aiohttp

    try:
        yield
    except aiohttp.ConnectionTimeoutError:
        raise httpx.ConnectTimeout("timed out connecting", request=request) from None
    except (aiohttp.ServerTimeoutError, TimeoutError):
        raise httpx.ReadTimeout("timed out waiting for the answer", request=request) from None
    except aiohttp.ClientConnectorError as exc:  # DNS failure, refused, unreachable
        raise httpx.ConnectError(f"cannot connect: {exc.os_error.strerror or type(exc.os_error).__name__}",
                                 request=request) from None
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
        self.limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20)
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        import aiohttp

        connector = aiohttp.TCPConnector(
            limit=self.limits.max_connections or 0, ssl=httpx.create_ssl_context(),
            keepalive_timeout=self.limits.keepalive_expiry if self.limits.keepalive_expiry is not None else 5.0,
        )
        # Cookies are not kept: an adapter's calls are independent (httpx's client has its own jar if wanted).
        return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                     auto_decompress=False)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        import aiohttp
        import yarl

        if self._session is None:
            self._session = self._open()
        timeout: dict[str, Any] = request.extensions.get("timeout", {})
        body = await request.aread()  # the bytes httpx built (JSON, form); read already for all but streams
        with translate(request):
            response = await self._session.request(
                request.method, yarl.URL(str(request.url), encoded=True), headers=request.headers.multi_items(),
                data=body or None, allow_redirects=False, compress=False,
                skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
                timeout=aiohttp.ClientTimeout(total=None, connect=timeout.get("pool"),
                                              sock_connect=timeout.get("connect"), sock_read=timeout.get("read")),
            )
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode("latin-1", "replace")
        return httpx.Response(response.status, headers=list(response.raw_headers),
                              stream=_Body(response, request), request=request, extensions=extensions)

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
