"""The buyer's mailbox for the email variant of ``delivery-daemon demo``: a local SMTP server (aiosmtpd) on
127.0.0.1 that keeps what it accepts.

aiosmtpd is a test dependency, not a runtime one (the daemon itself only sends mail): :func:`smtp_available` says
whether it is installed, and the demo delivers through the ``webhook`` channel instead when it is not.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

SUBJECT = "Order {order_id}"  # the demo store's subject: the sink reads the order id back from it


def smtp_available() -> bool:
    """Whether aiosmtpd can be imported (``pip install aiosmtpd``)."""
    try:
        import aiosmtpd.smtp  # noqa: F401  (optional: the test extra installs it)
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class Mail:
    """One message the sink accepted: the order it names, the key lines of its body, when it arrived."""

    order_id: str
    keys: int
    at: float


@dataclass
class SmtpSink:
    """aiosmtpd handler: answers the first ``busy`` messages ``451`` (a temporary failure, so the demo shows a
    retry), accepts the rest and records them in ``mails``."""

    busy: int = 1
    mails: list[Mail] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.busy > 0:
            self.busy -= 1
            return "451 4.3.0 the demo's mailbox is busy, try again later"
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        order_id = str(message["Subject"]).removeprefix(SUBJECT.split("{", 1)[0])
        body = message.get_body(("plain",))
        text = body.get_content() if body is not None else ""
        # The body is the demo's template, once per product of the order: a thank-you line, then one key a line.
        # Keys hold no spaces and the prose lines do, so a cart's several sections are counted alike.
        keys = [line for line in (raw.strip() for raw in text.splitlines()) if line and " " not in line]
        self.mails.append(Mail(order_id, len(keys), time.time()))
        return "250 OK"


@contextlib.asynccontextmanager
async def smtp_sink() -> AsyncIterator[tuple[SmtpSink, int]]:
    """An SMTP server on 127.0.0.1 (a free port), in this event loop; yields the sink and its port."""
    from aiosmtpd.smtp import SMTP  # optional, see smtp_available()

    sink = SmtpSink()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(sink, hostname="127.0.0.1"), "127.0.0.1", 0)
    try:
        yield sink, int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()
