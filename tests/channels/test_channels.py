"""Delivery channels end to end over real sockets: email through an aiosmtpd server (with AUTH), the signed
outbound webhook with the worker's retries, and the channel configuration errors."""

from __future__ import annotations

from email import message_from_bytes
from pathlib import Path

import pytest
import standardwebhooks

from delivery_daemon.clock import ManualClock
from delivery_daemon.compose import default_marketplaces
from delivery_daemon.config import parse_settings
from delivery_daemon.errors import ConfigError
from delivery_daemon.pipeline.stores import build_stores
from tests.support.multistore import multi_stack

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


async def test_email_reaches_the_buyer_with_the_template(tmp_path: Path) -> None:
    """A paid order is emailed (SMTP AUTH) to the buyer with the product's template and a stable Message-ID."""
    async with multi_stack(tmp_path, mail=True) as multi:
        await multi.generic().send("order.paid", {"order_id": "M-1", "quantity": 2, "email": "eve@example.org"})
        await multi.drain()
        job = await multi.job("generic", "M-1")
        assert job.state == "delivered", job.last_error
        assert multi.mailbox is not None
        [envelope] = multi.mailbox.messages
        assert envelope.rcpt_tos == ["eve@example.org"] and envelope.mail_from == "shop@example.org"
        message = message_from_bytes(envelope.content)
        assert message["Subject"] == "Order M-1" and message["Message-ID"].startswith("<delivery.")
        payload = message.get_payload(decode=True)
        assert isinstance(payload, bytes)  # a single-part message decodes to its bytes
        body = payload.decode().replace("\r\n", "\n")  # SMTP line endings
        assert body.startswith("Thank you! Your keys:\n") and body.count("-") == 4
        assert "smtp-pass-123" not in multi.logs.getvalue()


async def test_email_login_refused_is_retried_and_missing_buyer_email_is_dead(tmp_path: Path) -> None:
    """A wrong SMTP password schedules a retry; an order without a buyer email is dead (nothing to send to)."""
    async with multi_stack(tmp_path, mail=True, smtp={"password": "wrong-password"}) as multi:
        await multi.generic().send("order.paid", {"order_id": "M-2", "email": "f@example.org"})
        await multi.generic().send("order.paid", {"order_id": "M-3"})
        await multi.drain()
        assert (await multi.job("generic", "M-2")).state == "retry_wait"
        assert "SMTP login refused" in (await multi.job("generic", "M-2")).last_error
        assert (await multi.job("generic", "M-3")).state == "dead"
        assert multi.mailbox is not None and multi.mailbox.messages == []
        assert "wrong-password" not in multi.logs.getvalue()


async def test_email_server_down_is_retried(tmp_path: Path) -> None:
    """No SMTP server listening: the delivery is retried, not lost."""
    async with multi_stack(tmp_path, mail=False) as multi:
        await multi.generic().send("order.paid", {"order_id": "M-4", "email": "g@example.org"})
        await multi.drain()
        job = await multi.job("generic", "M-4")
        assert job.state == "retry_wait" and job.content is not None


async def test_outbound_webhook_is_retried_with_the_same_id_and_keys(tmp_path: Path) -> None:
    """A 503 from the seller's system is retried on schedule; the retry carries the same webhook-id and body,
    freshly signed, and verifies with the standardwebhooks library."""
    async with multi_stack(tmp_path) as multi:
        multi.seller.answers.extend([503])
        data = {"event": "order:paid"}
        from delivery_daemon.reference.sellix import order

        paid = order("svc-9", quantity=1)
        await multi.sellix().send(data["event"], paid)
        await multi.drain()
        assert (await multi.job("sellix", paid["uniqid"])).state == "retry_wait"
        multi.clock.advance(5)
        await multi.drain()
        first, second = multi.seller.received
        assert first.status == 503 and second.status == 200
        assert first.msg_id == second.msg_id and first.body == second.body
        assert (await multi.job("sellix", paid["uniqid"])).state == "delivered"


async def test_outbound_webhook_gone_is_dead(tmp_path: Path) -> None:
    """A 410 from the seller's system ends the job (the endpoint is gone)."""
    async with multi_stack(tmp_path) as multi:
        multi.seller.answers.append(410)
        from delivery_daemon.reference.shoppy import order

        data = order("7")
        await multi.shoppy().send(100, data)
        await multi.drain()
        assert (await multi.job("shoppy", data["id"])).state == "dead"


def test_outbound_signature_verifies_with_the_library() -> None:
    """The channel's headers for a job verify with standardwebhooks.Webhook.verify."""
    import time

    from delivery_daemon.channels.webhook import message_body, message_id
    from delivery_daemon.config import whsec_key
    from delivery_daemon.net.signatures import standard_headers
    from delivery_daemon.order import Content
    from delivery_daemon.reference.standard_webhooks import new_secret
    from delivery_daemon.storage.models import Job

    secret = new_secret()
    job = Job(
        store="s",
        order_id="o",
        marketplace="m",
        product_id="p",
        payload="{}",
        due_at=0,
        created_at=0,
        updated_at=0,
        quantity=1,
    )
    body = message_body(job, Content("k", None, ("k",)))
    headers = standard_headers(whsec_key(secret), message_id(job), int(time.time()), body)
    assert standardwebhooks.Webhook(secret).verify(body, headers)["data"]["keys"] == ["k"]


@pytest.mark.parametrize(
    ("store", "path"),
    [
        ({"marketplace": "shoppy"}, "stores[0].delivery.channel"),
        ({"marketplace": "shoppy", "delivery": {"channel": "email"}}, "stores[0].delivery.email"),
        ({"marketplace": "shoppy", "delivery": {"channel": "webhook"}}, "stores[0].delivery.webhook"),
        (
            {
                "marketplace": "shoppy",
                "delivery": {"channel": "webhook", "webhook": {"url": "http://x", "secret": "nope"}},
            },
            "stores[0].delivery.webhook.secret",
        ),
        (
            {
                "marketplace": "shoppy",
                "delivery": {"channel": "email", "email": {"host": "h", "sender": "a@b.c", "subject": "{password}"}},
            },
            "stores[0].delivery.email.subject",
        ),
        ({"marketplace": "sellix", "webhook_secret": None}, "stores[0].webhook_secret"),
    ],
)
def test_channel_config_errors_name_the_key(store: dict[str, object], path: str) -> None:
    """A store without a usable channel or secret fails at start with the key path."""
    document = {"stores": [{"name": "s", "webhook_secret": "secret-1", **store}]}
    if store.get("webhook_secret", "x") is None:
        document["stores"][0].pop("webhook_secret")
    with pytest.raises(ConfigError) as info:  # the webhook secret's form is checked with the settings themselves
        build_stores(parse_settings(document), default_marketplaces(), {}, ManualClock())
    assert info.value.path == path


def test_unknown_channel_is_a_settings_error() -> None:
    """delivery.channel must be marketplace, email or webhook."""
    with pytest.raises(ConfigError, match=r"stores\[0\]\.delivery\.channel"):
        parse_settings({"stores": [{"name": "s", "marketplace": "shoppy", "delivery": {"channel": "sms"}}]})


async def test_outbound_webhook_to_loopback_is_refused_by_default(tmp_path: Path) -> None:
    """Under the default policy a webhook URL on 127.0.0.1 makes the job dead, unsent, logged as refused."""
    async with multi_stack(tmp_path, security={}) as multi:
        from delivery_daemon.reference.shoppy import order

        data = order("8")
        await multi.shoppy().send(100, data)
        await multi.drain()
        job = await multi.job("shoppy", data["id"])
        assert job.state == "dead" and "not contacted" in (job.last_error or "")
        assert multi.seller.received == []
        assert "security.destination_refused" in multi.log_events()


async def test_outbound_webhook_to_allowed_private_network_is_delivered(tmp_path: Path) -> None:
    """With security.allow_private_networks the same loopback webhook URL is delivered."""
    async with multi_stack(tmp_path, security={"allow_private_networks": True}) as multi:
        from delivery_daemon.reference.shoppy import order

        data = order("9")
        await multi.shoppy().send(100, data)
        await multi.drain()
        assert (await multi.job("shoppy", data["id"])).state == "delivered"
        assert len(multi.seller.received) == 1
        assert "security.destination_refused" not in multi.log_events()


async def test_outbound_webhook_does_not_follow_redirects() -> None:
    """A 302 from the seller's endpoint is retried as an answer; its Location is never requested."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import RedirectResponse, Response
    from starlette.routing import Route

    from delivery_daemon.channels.webhook import WebhookDelivery
    from delivery_daemon.config import DeliverySettings, OutboundWebhookSettings, StoreSettings
    from delivery_daemon.errors import Retry
    from delivery_daemon.http.serving import serve
    from delivery_daemon.marketplaces.base import AdapterContext
    from delivery_daemon.net.guard import NetPolicy
    from delivery_daemon.order import Content
    from delivery_daemon.reference.standard_webhooks import new_secret
    from delivery_daemon.storage.models import Job

    hits: list[str] = []

    async def handle(request: Request) -> Response:
        hits.append(request.url.path)
        return RedirectResponse("/elsewhere", status_code=302)

    async with serve(Starlette(routes=[Route("/{path:path}", handle, methods=["GET", "POST"])])) as server:
        store = StoreSettings.model_validate({"name": "s", "marketplace": "shoppy", "webhook_secret": "x" * 16})
        context = AdapterContext(
            store=store,
            path="stores[0]",
            clock=ManualClock(),
            delivery=DeliverySettings(),
            policy=NetPolicy(allow_private=True),
        )
        sink = WebhookDelivery(OutboundWebhookSettings(url=f"{server.url}/hook", secret=new_secret()), context)
        job = Job(
            store="s",
            order_id="o",
            marketplace="shoppy",
            product_id="p",
            payload="{}",
            due_at=0,
            created_at=0,
            updated_at=0,
            quantity=1,
        )
        with pytest.raises(Retry, match="302"):
            await sink.send(job, Content("k", None, ("k",)))
    assert hits == ["/hook"]


async def test_outbound_webhook_keeps_one_connection_alive() -> None:
    """Successive deliveries reuse one keep-alive connection (no handshake per order); aclose() ends it."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from delivery_daemon.channels.webhook import WebhookDelivery
    from delivery_daemon.config import DeliverySettings, OutboundWebhookSettings, StoreSettings
    from delivery_daemon.http.serving import serve
    from delivery_daemon.marketplaces.base import AdapterContext
    from delivery_daemon.net.guard import NetPolicy
    from delivery_daemon.order import Content
    from delivery_daemon.reference.standard_webhooks import new_secret
    from delivery_daemon.storage.models import Job

    peers: list[tuple[str, int]] = []

    async def handle(request: Request) -> Response:
        assert request.client is not None
        peers.append((request.client.host, request.client.port))
        return JSONResponse({"ok": True})

    async with serve(Starlette(routes=[Route("/hook", handle, methods=["POST"])])) as server:
        store = StoreSettings.model_validate({"name": "s", "marketplace": "shoppy", "webhook_secret": "x" * 16})
        context = AdapterContext(
            store=store,
            path="stores[0]",
            clock=ManualClock(),
            delivery=DeliverySettings(),
            policy=NetPolicy(allow_private=True),
        )
        sink = WebhookDelivery(OutboundWebhookSettings(url=f"{server.url}/hook", secret=new_secret()), context)
        for order_id in ("a", "b", "c"):
            job = Job(
                store="s",
                order_id=order_id,
                marketplace="shoppy",
                product_id="p",
                payload="{}",
                due_at=0,
                created_at=0,
                updated_at=0,
                quantity=1,
            )
            assert (await sink.send(job, Content("k", None, ("k",)))).http_status == 200
        await sink.aclose()
        assert sink._http is not None and sink._http.is_closed
    assert len(peers) == 3 and len(set(peers)) == 1
