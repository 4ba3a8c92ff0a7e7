"""No secret the daemon handles ever reaches a log line, an HTTP body it sends or an order's recorded history.

Each scenario walks the paths that produce the most diagnostics — happy deliveries, 5xx and dropped deliveries,
deliveries refused for good, expired JWTs, a revoked API key, the marketplace down, forged and malformed webhooks,
an unpaid order, a foreign ``delivery_url``, a refused SMTP login, a failing key server — for every marketplace
(SoftStore, Sellix, Shoppy, Stripe stores, Standard Webhooks) and every sink (the marketplace's delivery API, email
through a real aiosmtpd with AUTH, the outbound webhook, the ``http`` generator). Everything is captured: structlog,
stdlib logging with the chattiest libraries (httpx, httpcore, uvicorn, aiosmtplib) turned up to DEBUG, the process's
stdout/stderr, every body the daemon answered (webhook errors, health, metrics, the status page) and the database's
history columns. Then all of it is searched for every secret of the run.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from email import message_from_bytes
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from delivery_daemon.http.serving import serve
from delivery_daemon.logs import REDACTED, REDACTOR, scrub_record
from delivery_daemon.order import Content
from delivery_daemon.reference import sellix, shoppy, stripe_store
from delivery_daemon.reference.sender import WebhookSender
from delivery_daemon.reference.standard_webhooks import StandardWebhooksSender, new_secret
from tests.support.multistore import Multi, multi_stack
from tests.support.stack import PRODUCT, STORE, Stack
from tests.support.status_helpers import PASSWORD, TOKEN, status_page

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")

LOUD = ("httpx", "httpcore", "uvicorn", "uvicorn.error", "aiosmtplib", "delivery_daemon")
"""Loggers turned up to DEBUG for the run (the daemon pins the first two at WARNING; the scrubber must hold anyway)."""

NOT_THE_DAEMON = ("mail.log",)
"""The test's own SMTP server (aiosmtpd, playing the buyer's mail system) logs the mail it receives: not ours."""


@pytest.fixture
def loud(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[], None]]:
    """Call it once the daemon is configured: every listed logger at DEBUG into caplog; restored afterwards."""
    before = {name: logging.getLogger(name).level for name in LOUD}

    def turn_up() -> None:
        caplog.set_level(logging.DEBUG)
        for name in LOUD:
            logging.getLogger(name).setLevel(logging.DEBUG)

    yield turn_up
    for name, level in before.items():
        logging.getLogger(name).setLevel(level)


@dataclass
class Capture:
    """Everything the daemon said during a run, by channel."""

    bodies: list[str] = field(default_factory=list)

    def answer(self, response: httpx.Response) -> httpx.Response:
        self.bodies.append(f"{response.status_code} {response.headers} {response.text}")
        return response

    def haystacks(
        self,
        structlog_text: str,
        caplog: pytest.LogCaptureFixture,
        capfd: pytest.CaptureFixture[str],
        engine: Engine,
        senders: Sequence[WebhookSender] = (),
    ) -> dict[str, str]:
        with engine.connect() as conn:
            history = conn.execute(text("SELECT coalesce(error, '') FROM attempts")).scalars().all()
            last_errors = conn.execute(text("SELECT coalesce(last_error, '') FROM jobs")).scalars().all()
        out, err = capfd.readouterr()
        answered = [f"{s.status} {s.answer}" for sender in senders for s in sender.sent]
        return {
            "structlog": structlog_text,
            "stdlib logging": "\n".join(  # formatted: message with its arguments, and any traceback text
                caplog.handler.format(r) for r in caplog.records if not r.name.startswith(NOT_THE_DAEMON)
            ),
            "stdout/stderr": out + err,
            "bodies the daemon sent": "\n".join(self.bodies + answered),
            "attempt history": "\n".join([*history, *last_errors]),
        }


def leaks(haystacks: dict[str, str], secrets: dict[str, set[str]]) -> list[str]:
    return [
        f"{kind} found in {where}"
        for where, hay in haystacks.items()
        for kind, values in secrets.items()
        for value in values
        if value and value in hay
    ]


def assert_no_leak(haystacks: dict[str, str], secrets: dict[str, set[str]]) -> None:
    empty = [kind for kind, values in secrets.items() if not values]
    assert empty == [], f"the scenario must have produced every kind of secret: {empty}"
    assert "structlog" in haystacks and '"event"' in haystacks["structlog"]
    assert leaks(haystacks, secrets) == []


async def admin_bodies(capture: Capture, url: str) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        for path in ("/healthz", "/readyz", "/metrics"):
            capture.answer(await client.get(f"{url}{path}"))


# -- SoftStore: the marketplace's delivery API, JWTs, delivery tokens, and the http generator ---------------------


class KeyServer:
    """The seller's key server for the ``http`` generator: fails once with a 503, then hands out keys."""

    def __init__(self) -> None:
        self.calls = 0
        self.app = Starlette(routes=[Route("/keys", self.keys, methods=["POST"])])

    async def keys(self, request: Request) -> Response:
        self.calls += 1
        if self.calls == 1:
            return JSONResponse({"error": "warming up"}, status_code=503)
        order = await request.json()
        return JSONResponse({"keys": [f"HTTPKEY-{order['order_id'][-6:]}-{i}" for i in range(order["quantity"])]})


def softstore_secrets(stack: Stack, extra: dict[str, set[str]]) -> dict[str, set[str]]:
    """Every secret of the run, by kind, taken from the marketplace's own records."""
    market = stack.market
    keys: set[str] = set()
    for record in market.delivery_log:
        body = record.json if isinstance(record.json, dict) else {}
        lines = str(body.get("text", "")).splitlines()[1:]  # the template's first line names the order
        keys.update(line.strip() for line in lines if line.strip())
    return {
        "api key": {stack.api_key},
        "webhook signing key": {hashlib.sha1(stack.api_key.encode()).hexdigest()},
        "jwt": set(market._jwts),
        "delivery token": {order.token for order in market.orders.values()},
        "generated key": keys,
        "status page password/token": {PASSWORD, TOKEN},
        **extra,
    }


async def test_softstore_run_leaks_no_secret(
    make_stack: Callable[..., AbstractAsyncContextManager[Stack]],
    loud: Callable[[], None],
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """SoftStore with its delivery API, the http generator and the status page: nothing secret anywhere."""
    key_server, key_token = KeyServer(), "keyserver-token-" + new_secret()[-12:]
    capture = Capture()
    async with (
        serve(key_server.app) as keys_running,
        make_stack(
            products={
                "via-http": {
                    "generator": "http",
                    "template": "Keys for {order_id}:\n{keys_lines}",
                    "options": {"url": f"{keys_running.url}/keys", "token": key_token},
                }
            },
            security={"allowed_networks": ["127.0.0.0/8"]},
            status={"password": PASSWORD, "token": TOKEN},
        ) as stack,
    ):
        loud()
        market, faults = stack.market, stack.market.faults
        market.add_product("via-http", count=100)

        async def post(body: bytes | dict[str, Any], **kwargs: Any) -> None:
            capture.answer(await stack.post(body, **kwargs))

        placed = [await market.place_order(PRODUCT, 2) for _ in range(3)]
        placed.append(await market.place_order("via-http", 2))  # key server: 503 first, then keys
        faults.fail_next_deliveries(1, status=503)
        faults.drop_next_deliveries(1)
        await stack.drain()
        faults.expire_tokens()
        faults.fail_next_order_info(1)
        placed.append(await market.place_order(PRODUCT, 1))
        await stack.advance_and_drain(10)
        faults.down()
        placed.append(await market.place_order(PRODUCT, 1))
        await stack.advance_and_drain(10)
        faults.down(False)
        unpaid = await market.place_order(PRODUCT, 1, status="wait")
        for _ in range(4):
            await stack.advance_and_drain(2000)
        refused = await market.place_order(PRODUCT, 1, send_webhook=False)
        faults.fail_next_deliveries(1, status=422)  # delivery rejected for good: dead
        capture.answer(await stack.post(refused.payload))
        await stack.drain()

        good = market.webhook_payload(placed[0].id_order)
        await post({**good, "signature": "0" * 40})  # forged
        await post({**good, "delivery_url": "http://evil.example/" + placed[0].token})  # foreign host, real token
        await post(b'{"id_order": "' + placed[1].token.encode() + b'", "signature": 1')  # truncated JSON
        await post(good, content_type="text/plain")
        await post(good, store="no-such-store")
        await post(b"x" * (stack.settings.server.max_body_bytes + 1))
        await post({**good, "id_order": "bad id " + placed[2].token})
        await admin_bodies(capture, stack.url)
        async with status_page(stack) as page:
            capture.answer(await page.client.get(f"{page.url}/"))
            capture.answer(await page.login("not-the-password"))
            capture.answer(await page.client.get(f"{page.url}/orders", headers={"Authorization": "Bearer nope"}))

        # The API key revoked at the marketplace: the token request is refused (401) on the next delivery.
        revoked = await market.place_order(PRODUCT, 1)
        stack.market._api_key = "rotated-" + stack.api_key
        faults.expire_tokens()
        await stack.advance_and_drain(2000)

        assert all(market.accepted(p.id_order) is not None for p in placed)
        assert market.accepted(unpaid.id_order) is None and market.accepted(revoked.id_order) is None
        assert (await stack.job(refused.id_order)).state == "dead"
        assert "refused the API key" in ((await stack.job(revoked.id_order)).last_error or "")
        assert key_server.calls == 2
        haystacks = capture.haystacks(stack.logs.getvalue(), caplog, capfd, stack.daemon.engine)
        secrets = softstore_secrets(
            stack, {"http generator token": {key_token}, "rotated api key": {stack.market._api_key}}
        )
    assert "HTTP Request: POST" in haystacks["stdlib logging"], "httpx's request lines must have been captured"
    assert "delivery.retry_scheduled" in haystacks["structlog"]
    assert "HTTPKEY-" in str(secrets["generated key"])
    assert_no_leak(haystacks, secrets)


# -- the marketplaces that sign their webhook body, through the email and outbound webhook channels --------------


async def forged_and_malformed(
    multi: Multi, store: str, sender: WebhookSender, forged: WebhookSender, send: Callable[[WebhookSender, str], Any]
) -> None:
    """A forged signature (the sender signs with another secret), truncated JSON and an unknown store."""
    await send(forged, "forged-1")
    await sender.post(b'{"data": {"id": "' + multi.secrets[store].encode(), {"X-Nothing": "1"})
    for bad in (multi.hook(store) + "-nope", multi.hook(store)):
        broken = type(sender)(bad, sender.secret, now=multi.clock.now)
        await broken.post(b"[1, 2", {})
        sender.sent.extend(broken.sent)


def sender_for(multi: Multi, store: str, secret: str | None = None) -> tuple[WebhookSender, Callable[..., Any]]:
    """The store's reference sender (signing with ``secret`` if given) and ``send(sender, order_id)``."""
    secret = secret or multi.secrets[store]
    hook, now = multi.hook(store), multi.clock.now
    if store == "sellix":
        return sellix.SellixSender(hook, secret, now=now), lambda s, oid: s.send(
            "order:paid", sellix.order("p1", 2, uniqid=oid)
        )
    if store == "shoppy":
        return shoppy.ShoppySender(hook, secret, now=now), lambda s, oid: s.send(
            100, shoppy.order("p1", 2, order_id=oid)
        )
    if store == "stripe":
        return stripe_store.StripeStoreSender(hook, secret, now=now), lambda s, oid: s.send(
            stripe_store.event("payment_intent.succeeded", stripe_store.payment_intent("p1", 2, pi_id=oid))
        )
    return StandardWebhooksSender(hook, secret, now=now), lambda s, oid: s.send(
        "order.paid", {"order_id": oid, "quantity": 2, "email": "eve@example.org"}
    )


CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "sellix+webhook": ("sellix", {"mail": False}),
    "shoppy+webhook": ("shoppy", {"mail": False}),
    "stripe+webhook": ("stripe", {"mail": False}),
    "standard-webhooks+email": ("generic", {"mail": True}),
    "email-login-refused": ("generic", {"mail": True, "smtp": {"password": "wrong-smtp-password-77"}}),
    "email-server-down": ("generic", {"mail": False}),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_signed_marketplace_run_leaks_no_secret(
    case: str,
    tmp_path: Path,
    loud: Callable[[], None],
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Per marketplace and channel: deliveries, seller 5xx/410, SMTP refusals, forgeries — nothing secret leaks."""
    store, options = CASES[case]
    capture = Capture()
    async with multi_stack(tmp_path, **options) as multi:
        loud()
        sender, send = sender_for(multi, store)
        forged, _ = sender_for(multi, store, "whsec_" + new_secret()[6:] if store != "sellix" else "f" * 32)
        multi.seller.answers = [503, 500, 410]  # the outbound webhook: two retries, then gone for good
        for n in range(4):
            await send(sender, f"order-{n}")
        await forged_and_malformed(multi, store, sender, forged, send)
        for _ in range(4):
            await multi.drain()
            multi.clock.advance(400)
        await admin_bodies(capture, multi.url)
        senders = [sender, forged]
        haystacks = capture.haystacks(multi.logs.getvalue(), caplog, capfd, multi.daemon.engine, senders)
        keys = delivered_keys(multi)
        states = {f"order-{n}": (await multi.job(store, f"order-{n}")) for n in range(4)}
    assert all(s.status >= 400 for s in forged.sent) and len(forged.sent) == 1
    assert all(job is not None for job in states.values())
    smtp_password = str(options.get("smtp", {}).get("password", "smtp-pass-123"))
    secrets: dict[str, set[str]] = {
        "marketplace webhook secret": {multi.secrets[store]},
        "outbound webhook secret": {multi.seller.secret},
        "smtp password": {smtp_password},
        "generated key": keys
        | {
            key
            for job in states.values()
            if job.content  # generated, maybe never delivered
            for key in Content.from_json(job.content).keys
        },
    }
    if store == "generic":
        expected = {"delivered"} if case.endswith("+email") else {"dead"}  # the email failures exhaust retries
        assert {job.state for job in states.values()} == expected
    else:
        assert [r.status for r in multi.seller.received][:3] == [503, 500, 410]
        assert {job.state for job in states.values()} >= {"delivered", "dead"}
    assert_no_leak(haystacks, secrets)


def delivered_keys(multi: Multi) -> set[str]:
    """Keys the sinks received: outbound webhook bodies and emails."""
    found: set[str] = set()
    for received in multi.seller.received:
        found.update(received.body["data"]["keys"])
    for envelope in multi.mailbox.messages if multi.mailbox else []:
        payload = message_from_bytes(envelope.content).get_payload(decode=True)
        assert isinstance(payload, bytes)  # a single-part message decodes to its bytes
        body = payload.decode()
        found.update(line.strip() for line in body.splitlines()[1:] if line.strip())
    return found


# -- the scrubber itself ----------------------------------------------------------------------------------------


def test_leak_search_finds_a_planted_secret() -> None:
    """The search itself works: a secret planted in a log line is reported with its kind and channel."""
    line = json.dumps({"event": "x", "detail": "token abc123secret here"})
    assert leaks({"structlog": line}, {"delivery token": {"abc123secret"}}) == ["delivery token found in structlog"]


def test_stdlib_records_are_scrubbed_of_secrets_urls_and_tracebacks() -> None:
    """A registered secret is removed from any record; an httpx record keeps only each URL's origin; a traceback's
    text is scrubbed too."""
    REDACTOR.add("planted-secret-value")
    record = logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1, "key %s", ("planted-secret-value",), None)
    assert scrub_record(record, REDACTOR).getMessage() == f"key {REDACTED}"
    url = logging.LogRecord(
        "httpx",
        logging.INFO,
        __file__,
        1,
        'HTTP Request: %s %s "%s"',
        ("POST", httpx.URL("http://127.0.0.1:9/api/orders/delivery/unregistered-token?x=1"), "HTTP/1.1 200 OK"),
        None,
    )
    expected = f'HTTP Request: POST http://127.0.0.1:9/{REDACTED} "HTTP/1.1 200 OK"'
    assert scrub_record(url, REDACTOR).getMessage() == expected
    try:
        raise RuntimeError("failed with planted-secret-value")
    except RuntimeError:
        import sys

        failed = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom", None, sys.exc_info())
    scrubbed = scrub_record(failed, REDACTOR)
    assert "planted-secret-value" not in (scrubbed.exc_text or "") and REDACTED in (scrubbed.exc_text or "")


async def test_a_delivery_token_reaching_a_log_call_by_mistake_is_redacted(stack: Stack) -> None:
    """Second line of defence: once SoftStore delivered an order, its token is scrubbed from any later event."""
    import structlog

    placed = await stack.market.place_order(PRODUCT, 1)
    await stack.drain()
    structlog.get_logger("test").warning(
        "planted",
        detail=f"late error for {placed.token}",
        url=f"{stack.market.api_base}/orders/delivery/{placed.token}",
    )
    logs = stack.logs.getvalue()
    assert '"planted"' in logs and placed.token not in logs and REDACTED in logs


def test_delivery_url_with_a_short_last_segment_is_registered_whole(stack: Stack) -> None:
    """SoftStore registers a delivery URL's last segment (which scrubs the URL holding it); when that segment is
    too short to be registered, the whole URL is, so the URL is still scrubbed."""
    import structlog

    from delivery_daemon.marketplaces.softstore import SoftStoreAdapter

    adapter = stack.daemon.stores[STORE].marketplace
    assert isinstance(adapter, SoftStoreAdapter)
    long_url = f"{stack.market.api_base}/orders/delivery/{'a1' * 16}"
    short_url = f"{stack.market.api_base}/orders/delivery/shorttok"
    adapter.remember_token({"token": None}, long_url)
    adapter.remember_token({"token": None}, short_url)
    assert "a1" * 16 in adapter.secrets() and long_url not in adapter.secrets()
    assert short_url in adapter.secrets()
    structlog.get_logger("test").warning("planted", first=long_url, second=short_url)
    logs = stack.logs.getvalue()
    assert '"planted"' in logs and "a1" * 16 not in logs and short_url not in logs


async def test_secret_plugin_options_are_registered_with_the_redactor(tmp_path: Path) -> None:
    """A generator option declared SecretStr (the http generator's token) is one of the store's secrets, and the
    daemon hands it to the log redactor."""
    from delivery_daemon.clock import ManualClock
    from delivery_daemon.compose import build_daemon, default_marketplaces
    from delivery_daemon.config import parse_settings
    from delivery_daemon.generators.discovery import discover
    from delivery_daemon.logs import REDACTOR
    from delivery_daemon.pipeline.stores import build_stores

    settings = parse_settings(
        {
            "database": {"url": f"sqlite:///{tmp_path / 'd.db'}"},
            "stores": [
                {
                    "name": "s",
                    "marketplace": "shoppy",
                    "webhook_secret": "x" * 16,
                    "delivery": {
                        "channel": "webhook",
                        "webhook": {"url": "https://hooks.example/o", "secret": new_secret()},
                    },
                    "products": {
                        "p": {"generator": "http", "options": {"url": "https://keys.example/k", "token": "tok-123456"}}
                    },
                }
            ],
        },
        environ={},
    )
    [store] = build_stores(settings, default_marketplaces(), dict(discover()), ManualClock()).values()
    assert "tok-123456" in store.static_secrets()
    assert "tok-123456" in REDACTOR.scrub_text("token tok-123456")  # not registered yet in this process
    daemon = build_daemon(settings, marketplaces=default_marketplaces(), plugins=dict(discover()), clock=ManualClock())
    try:
        assert REDACTOR.scrub_text("token tok-123456") == f"token {REDACTED}"
    finally:
        await daemon.aclose()
