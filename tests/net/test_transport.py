"""The aiohttp-backed httpx transport: sends what httpx built, keeps connections, and fails the way httpx does;
``send_read`` (no httpx.Request) sends and answers the same, and fails the same way."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from delivery_daemon.http.serving import RunningServer, serve
from delivery_daemon.marketplaces.base import transport_retry
from delivery_daemon.net.guard import NetPolicy, guarded_transport
from delivery_daemon.net.transport import AiohttpTransport, read_built


def echo_app() -> Starlette:
    async def echo(request: Request) -> Response:
        client = request.scope["client"]
        return JSONResponse(
            {
                "method": request.method,
                "raw_path": request.scope["raw_path"].decode(),
                "query": request.scope["query_string"].decode(),
                "headers": [[k.decode(), v.decode()] for k, v in request.scope["headers"]],
                "body": (await request.body()).decode(),
                "peer_port": client[1],
            }
        )

    async def moved(request: Request) -> Response:
        return RedirectResponse("http://127.0.0.1:1/elsewhere", status_code=302)

    async def zipped(request: Request) -> Response:
        return Response(gzip.compress(b"x" * 1000), headers={"Content-Encoding": "gzip"})

    async def slow(request: Request) -> Response:
        await asyncio.sleep(5)
        return Response("late")

    both = ["GET", "POST"]  # send_read's comparison test POSTs to every route
    return Starlette(
        routes=[
            Route("/moved", moved, methods=both),
            Route("/zipped", zipped, methods=both),
            Route("/slow", slow),
            Route("/{rest:path}", echo, methods=both),
        ]
    )


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    async with serve(echo_app()) as running:
        yield running


TIMEOUTS = httpx.Timeout(5.0).as_dict()


class SendRead:
    """The transport's other way in, as ``ApiClient.call`` uses it: ``send_read`` with plain values."""

    def __init__(self, transport: AiohttpTransport, timeouts: dict[str, float | None] = TIMEOUTS) -> None:
        self.transport = transport
        self.timeouts = timeouts

    async def get(self, url: str) -> httpx.Response:
        return await self.transport.send_read("GET", url, {}, None, self.timeouts)

    async def post(self, url: str, *, json: Any) -> httpx.Response:
        body = _encoded(json)
        return await self.transport.send_read("POST", url, {"Content-Type": "application/json"}, body, self.timeouts)


def _encoded(value: Any) -> bytes:
    return json.dumps(value).encode()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=AiohttpTransport(), timeout=5.0) as client:
        yield client


@pytest.fixture(params=["httpx", "send_read"])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient | SendRead]:
    """The transport through an httpx client (handle_async_request), and through send_read."""
    if request.param == "httpx":
        async with httpx.AsyncClient(transport=AiohttpTransport(), timeout=5.0) as client:
            yield client
        return
    transport = AiohttpTransport()
    try:
        yield SendRead(transport)
    finally:
        await transport.aclose()


async def test_sends_the_request_httpx_built(server: RunningServer, http: httpx.AsyncClient) -> None:
    """Method, encoded path and query, headers and JSON body reach the server exactly as httpx built them."""
    response = await http.post(
        f"{server.url}/orders/a%2Fb?token=x%20y",
        json={"id": "42"},
        headers={"X-Seller": "one", "Authorization": "Bearer t"},
    )
    assert response.status_code == 200
    seen = response.json()
    headers = dict(seen["headers"])
    assert (seen["method"], seen["raw_path"], seen["query"]) == ("POST", "/orders/a%2Fb", "token=x%20y")
    assert json.loads(seen["body"]) == {"id": "42"}
    assert headers["x-seller"] == "one" and headers["authorization"] == "Bearer t"
    assert headers["content-type"] == "application/json"
    assert headers["content-length"] == str(len(seen["body"]))
    assert headers["user-agent"].startswith("python-httpx")
    assert [k for k, _ in seen["headers"]].count("content-length") == 1


@pytest.mark.parametrize("path", ["/orders/delivery/tok?x=1", "/zipped", "/moved"])
async def test_send_read_sends_and_answers_as_the_built_request(server: RunningServer, path: str) -> None:
    """For the same values, send_read puts the same request on the wire as the httpx.Request read_built makes
    (method, path, query, headers, body) and answers the same status, headers, reason and decoded body."""
    transport = AiohttpTransport()
    headers = {"User-Agent": "delivery-daemon", "Authorization": "Bearer t", "Content-Type": "application/json"}
    try:
        answers = [
            await send(transport, "POST", f"{server.url}{path}", headers, b'{"text":"K\xc3\xa9"}', TIMEOUTS)
            for send in (read_built, AiohttpTransport.send_read)
        ]
    finally:
        await transport.aclose()
    built, direct = answers
    assert (built.status_code, built.reason_phrase, built.content) == (
        direct.status_code,
        direct.reason_phrase,
        direct.content,
    )
    without_date = [sorted((k, v) for k, v in a.headers.multi_items() if k != "date") for a in answers]
    assert without_date[0] == without_date[1]
    if path.startswith("/orders"):
        seen = [a.json() for a in answers]
        for echo in seen:
            echo.pop("peer_port")
            echo["headers"] = sorted(map(tuple, echo["headers"]))
        assert seen[0] == seen[1] and seen[0]["body"] == '{"text":"Ké"}'


async def test_connections_are_kept_alive(server: RunningServer, client: httpx.AsyncClient | SendRead) -> None:
    """Sequential requests reuse one connection (same client port on the server side)."""
    ports = {(await client.get(f"{server.url}/x")).json()["peer_port"] for _ in range(5)}
    assert len(ports) == 1


async def test_idle_connections_expire_before_the_server_closes_them(server: RunningServer) -> None:
    """Every outbound pool drops an idle connection before uvicorn's idle timeout can close it under a request."""
    server_idle = uvicorn.Config(echo_app()).timeout_keep_alive
    transport = AiohttpTransport()
    try:
        await SendRead(transport).get(f"{server.url}/x")  # the connector exists from the first request on
        assert transport._session is not None
        assert transport._session.connector is not None
        idle = transport._session.connector._keepalive_timeout
        assert idle is not None
        assert idle < server_idle
    finally:
        await transport.aclose()
    guarded = guarded_transport(NetPolicy())
    try:
        assert guarded._pool._keepalive_expiry is not None
        assert guarded._pool._keepalive_expiry < server_idle
    finally:
        await guarded.aclose()


async def test_redirects_are_answers(server: RunningServer) -> None:
    """A 3xx comes back as the answer: the transport itself never follows its Location."""
    async with httpx.AsyncClient(transport=AiohttpTransport(), follow_redirects=False) as http:
        response = await http.get(f"{server.url}/moved")
    assert response.status_code == 302
    assert response.headers["location"] == "http://127.0.0.1:1/elsewhere"


async def test_body_is_decoded_once(server: RunningServer, client: httpx.AsyncClient | SendRead) -> None:
    """A gzip answer is decompressed by httpx, not also by aiohttp (which would break the body)."""
    response = await client.get(f"{server.url}/zipped")
    assert response.content == b"x" * 1000


async def test_refused_connection_is_a_connect_error(client: httpx.AsyncClient | SendRead) -> None:
    """Connection refused is httpx.ConnectError (a connection error in the history, not a timeout)."""
    with socket.socket() as bound:  # bound, never listening: connecting is refused, and no one else gets the port
        bound.bind(("127.0.0.1", 0))
        with pytest.raises(httpx.ConnectError) as caught:
            await client.get(f"http://127.0.0.1:{bound.getsockname()[1]}/x")
    assert transport_retry(caught.value).reason == "connection error (ConnectError)"


@pytest.mark.parametrize("way", ["httpx", "send_read"])
async def test_slow_answer_is_a_read_timeout(server: RunningServer, way: str) -> None:
    """httpx's read timeout applies: a server that does not answer in time raises httpx.ReadTimeout."""
    timeout = httpx.Timeout(5.0, read=0.2)
    transport = AiohttpTransport()
    async with httpx.AsyncClient(transport=transport, timeout=timeout) as http:
        client = http if way == "httpx" else SendRead(transport, timeout.as_dict())
        with pytest.raises(httpx.ReadTimeout) as caught:
            await client.get(f"{server.url}/slow")
    assert transport_retry(caught.value).reason == "timeout (ReadTimeout)"


@contextlib.asynccontextmanager
async def raw_server(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[str]:
    """A TCP server that misbehaves as ``handler`` says, on loopback."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    async with server:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def test_dropped_connection_is_a_protocol_error(client: httpx.AsyncClient | SendRead) -> None:
    """A server that closes without answering raises httpx.RemoteProtocolError, with no URL in the message."""

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    async with raw_server(hang_up) as url:
        with pytest.raises(httpx.RemoteProtocolError) as caught:
            await client.get(f"{url}/delivery/secret-token")
    assert "secret-token" not in str(caught.value)


async def test_reset_connection_is_a_connection_error(client: httpx.AsyncClient | SendRead) -> None:
    """A server that resets the connection (RST) instead of answering raises an httpx transport error that the
    delivery history calls a connection error, never a timeout, with no URL in the message."""

    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close() sends RST
        writer.transport.abort()

    async with raw_server(reset) as url:
        with pytest.raises(httpx.TransportError) as caught:
            await client.post(f"{url}/delivery/secret-token", json={"text": "K"})
    assert not isinstance(caught.value, httpx.TimeoutException)
    assert transport_retry(caught.value).reason.startswith("connection error (")
    assert "secret-token" not in str(caught.value)


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"partial":', httpx.ReadError),
        (b"SMTP ready\r\n\r\n", httpx.RemoteProtocolError),
    ],
    ids=["cut-off-body", "not-http"],
)
async def test_broken_answers_raise_httpx_errors(
    client: httpx.AsyncClient | SendRead, answer: bytes, error: type[httpx.TransportError]
) -> None:
    """An answer shorter than its Content-Length is httpx.ReadError; one that is not HTTP, RemoteProtocolError."""

    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    async with raw_server(reply) as url:
        with pytest.raises(error):
            await client.get(f"{url}/x")


async def test_close_releases_the_connector(server: RunningServer) -> None:
    """aclose() closes aiohttp's session and forgets it: a transport used again opens a new one."""
    transport = AiohttpTransport()
    async with httpx.AsyncClient(transport=transport) as http:
        await http.get(f"{server.url}/x")
        session = transport._session
        assert session is not None
    assert session.closed and transport._session is None
    try:
        response = await transport.handle_async_request(httpx.Request("GET", f"{server.url}/x"))
        await response.aread()
        assert response.status_code == 200 and transport._session not in (None, session)
    finally:
        await transport.aclose()
