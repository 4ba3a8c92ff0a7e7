"""Closing a client's connection with no answer at all, as a failing marketplace or endpoint does.

A Starlette app made with :class:`DroppableApp` remembers uvicorn's own ``send`` in the scope; a handler then calls
:func:`drop_connection` to close the transport under the request. Without uvicorn (e.g. an in-process ASGI
transport) there is no transport to close and :class:`ConnectionDroppedError` is raised instead.
"""

from __future__ import annotations

import asyncio

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

_RAW_SEND = "delivery_daemon.reference.raw_send"


class ConnectionDroppedError(ConnectionError):
    """Raised by the app for a dropped request when the server gives no transport to close."""


class DroppableApp(Starlette):
    """Starlette that remembers the server's own ``send`` so a fault can close the connection under it."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[_RAW_SEND] = send
        await super().__call__(scope, receive, send)


async def drop_connection(request: Request) -> None:
    """Close the client connection without any response (uvicorn's cycle exposes its transport)."""
    owner = getattr(request.scope.get(_RAW_SEND), "__self__", None)
    transport = getattr(owner, "transport", None)
    if not isinstance(transport, asyncio.BaseTransport):
        raise ConnectionDroppedError("the reference server dropped the connection")
    transport.close()
    for _ in range(100):  # let the protocol see connection_lost, so the server sends nothing more
        if getattr(owner, "disconnected", True):
            break
        await asyncio.sleep(0)
