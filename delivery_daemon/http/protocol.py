"""uvicorn's HTTP/1.1 protocol with a deadline on request headers (slowloris).

uvicorn times out idle keep-alive connections but not a client that opens a connection and sends its request
headers a byte at a time (or never finishes them): such a connection is held for ever, and enough of them take
every file descriptor. With this protocol a request's headers must be complete within ``header_timeout`` seconds
of the connection opening (or of the previous response on it); otherwise the connection is answered ``408`` with
a JSON reason (if the client had started a request) and closed. The body has its own deadline
(``server.body_timeout``, enforced by the receiver).

The deadline is a mixin over uvicorn's parser: httptools when it is installed (uvicorn's own choice with
``http="auto"``; a default dependency), h11 otherwise (an install without it still serves, on uvicorn's pure-Python
parser).

The mixin relies on uvicorn's protocol classes, which are not public API (``cycle``, ``loop``, ``transport``,
``on_response_complete``): pyproject.toml keeps uvicorn below 1.0, constraints.txt pins the exact release the image
and CI install, and tests/http/test_protocol.py runs the deadline over both parsers, so a release that moves them
fails there before it is deployed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # an install without httptools (a default dependency, but uvicorn works without it)
    HttpToolsProtocol = None  # type: ignore[assignment,misc]  # None without httptools; header_deadline_protocol checks

_REASON = b'{"error":"request headers not received in time"}'
TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    b"content-length: " + str(len(_REASON)).encode() + b"\r\nconnection: close\r\n\r\n" + _REASON
)


class HeaderDeadline:
    """Mixed into a uvicorn HTTP protocol (see :func:`header_deadline_protocol`): closes a connection whose next
    request's headers do not arrive within ``header_timeout``. Relies on the protocol's ``cycle``, ``loop``,
    ``transport`` and its ``connection_made``/``data_received``/``on_response_complete``/``connection_lost``."""

    header_timeout: float = 10.0
    cycle: Any
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._watched: object = None
        self._started = False

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]  # a mixin: the uvicorn protocol after it in the MRO has it
        self._arm()

    def data_received(self, data: bytes) -> None:
        self._started = True
        super().data_received(data)  # type: ignore[misc]  # a mixin: the uvicorn protocol after it in the MRO has it

    def on_response_complete(self) -> None:
        # Armed before the base class runs, which may start a pipelined request at once. h11 then makes a new
        # cycle (which _expired ignores); httptools made the pipelined request's cycle when its headers arrived,
        # so that cycle is the one watched: a cycle being answered has its headers, so the deadline is off.
        self._arm()
        super().on_response_complete()  # type: ignore[misc]  # a mixin: the uvicorn protocol after it in the MRO has it
        if self.cycle is not None and not self.cycle.response_complete:
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]  # a mixin: the uvicorn protocol after it in the MRO has it

    def _arm(self) -> None:
        self._disarm()
        self._watched, self._started = self.cycle, False
        self._deadline = self.loop.call_later(self.header_timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.cycle is not self._watched or self.transport.is_closing():
            return  # a request's headers arrived in time; the receiver owns the body's deadline
        if self._started:
            self.transport.write(TIMEOUT_RESPONSE)
        self.transport.close()


def header_deadline_protocol(header_timeout: float, *, parser: str = "auto") -> type[asyncio.Protocol]:
    """The protocol class for ``uvicorn.Config(http=...)`` with the given deadline in seconds, over ``parser``:
    ``"httptools"``, ``"h11"``, or ``"auto"`` (httptools when installed, as uvicorn chooses)."""
    if parser == "auto":
        parser = "h11" if HttpToolsProtocol is None else "httptools"
    base: type[asyncio.Protocol] = H11Protocol if parser == "h11" else HttpToolsProtocol
    if base is None:
        raise ValueError("httptools is not installed")
    return type(f"HeaderDeadline{base.__name__}", (HeaderDeadline, base), {"header_timeout": header_timeout})
