"""The HTTP protocol's header deadline, over real loopback sockets: slow or unfinished headers are cut off."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from delivery_daemon.daemon import _server
from delivery_daemon.http.protocol import HeaderDeadline, header_deadline_protocol
from delivery_daemon.http.serving import serve

DEADLINE = 0.4


async def slow(request: Request) -> JSONResponse:
    await request.body()
    await asyncio.sleep(DEADLINE * 3)  # the handler outlasts the header deadline: it must not be cut off
    return JSONResponse({"ok": True})


async def fast(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


APP = Starlette(routes=[Route("/slow", slow, methods=["POST"]), Route("/fast", fast)])


@pytest.fixture(params=["h11", "httptools"])
def parser(request: pytest.FixtureRequest) -> str:
    """Each test runs over both of uvicorn's HTTP parsers (the daemon uses httptools when it is installed)."""
    return str(request.param)


@contextlib.asynccontextmanager
async def connection(parser: str) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    async with serve(APP, lifespan="off", http=header_deadline_protocol(DEADLINE, parser=parser)) as running:
        reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
        try:
            yield reader, writer
        finally:
            writer.close()


async def test_trickled_headers_get_408_and_the_connection_closes(parser: str) -> None:
    """A client sending its headers a byte at a time is answered 408 with a JSON reason once the deadline passes."""
    async with connection(parser) as (reader, writer):
        header = b"POST /fast HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 400
        sent = 0

        async def trickle() -> None:
            nonlocal sent
            for byte in header:  # 400+ bytes at 20 ms each: far longer than the deadline
                writer.write(bytes([byte]))
                await writer.drain()
                sent += 1
                await asyncio.sleep(0.02)

        trickler = asyncio.create_task(trickle())
        try:
            answer = await asyncio.wait_for(reader.read(), 30)  # read() returns at EOF: the server closed
        finally:
            trickler.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await trickler
    assert answer.startswith(b"HTTP/1.1 408 ") and answer.endswith(b'{"error":"request headers not received in time"}')
    assert 0 < sent < len(header)


async def test_silent_connection_is_closed_without_an_answer(parser: str) -> None:
    """A connection that never sends a byte is closed after the deadline (nothing to answer)."""
    async with connection(parser) as (reader, _writer):
        assert await asyncio.wait_for(reader.read(), 30) == b""


async def test_requests_whose_headers_arrive_in_time_are_not_cut(parser: str) -> None:
    """A handler running past the deadline, and a second request on the kept-alive connection, both complete."""
    async with connection(parser) as (reader, writer):
        writer.write(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        first = await asyncio.wait_for(reader.readuntil(b'{"ok":true}'), 30)
        writer.write(b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
        second = await asyncio.wait_for(reader.readuntil(b'{"ok":true}'), 30)
    assert first.startswith(b"HTTP/1.1 200 ") and second.startswith(b"HTTP/1.1 200 ")


async def test_pipelined_request_running_past_the_deadline_is_not_cut(parser: str) -> None:
    """A request pipelined behind another (its headers sent at once) is answered even when its handler outlasts
    the deadline that re-arms after the first response."""
    async with connection(parser) as (reader, writer):
        writer.write(
            b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\nPOST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
        )
        first = await asyncio.wait_for(reader.readuntil(b'{"ok":true}'), 30)
        second = await asyncio.wait_for(reader.readuntil(b'{"ok":true}'), 30)
    assert first.startswith(b"HTTP/1.1 200 ") and b"HTTP/1.1 200 " in second


async def test_unfinished_next_request_on_a_kept_alive_connection_gets_408(parser: str) -> None:
    """After a response, the next request's headers have the same deadline (not only the first request's)."""
    async with connection(parser) as (reader, writer):
        writer.write(b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.wait_for(reader.readuntil(b'{"ok":true}'), 30)
        writer.write(b"GET /fast HTTP/1.1\r\nHost: x\r\n")  # never finished
        answer = await asyncio.wait_for(reader.read(), 30)
    assert answer.startswith(b"HTTP/1.1 408 ")


def test_the_daemon_serves_with_the_configured_header_deadline() -> None:
    """The runner's servers use this protocol with server.header_timeout, over httptools when it is installed."""
    server = _server(APP, lifespan="off", grace=1, header_timeout=2.5)
    protocol = server.config.http
    assert isinstance(protocol, type) and issubclass(protocol, HeaderDeadline) and protocol.header_timeout == 2.5
    assert issubclass(protocol, HttpToolsProtocol)  # installed (test extra): the faster parser, as uvicorn picks
