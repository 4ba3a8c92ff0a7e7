"""Standard Webhooks inbound ("any other platform"): signatures cross-checked with the standardwebhooks library,
tolerance, several signatures, webhook-id dedup, order events; and the outbound channel's signature."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import standardwebhooks
from freezegun import freeze_time

from delivery_daemon.config import whsec_key
from delivery_daemon.errors import WebhookRejected
from delivery_daemon.net.signatures import standard_headers, standard_signature, verify_standard
from delivery_daemon.order import IncomingOrder
from delivery_daemon.reference.standard_webhooks import StandardWebhooksSender, new_secret
from tests.support.multistore import FROZEN_NOW, multi_stack, wall_clock_adapter

BODY = b'{"type":"order.paid","data":{"order_id":"A-1"}}'


def test_library_signature_verifies_with_ours() -> None:
    """standardwebhooks.Webhook.sign output is accepted by verify_standard; a different key is refused."""
    secret = new_secret()
    when = datetime.fromtimestamp(1_800_000_000, tz=UTC)
    signature = standardwebhooks.Webhook(secret).sign("msg_1", when, BODY.decode())
    headers = {"webhook-id": "msg_1", "webhook-timestamp": "1800000000", "webhook-signature": signature}
    assert verify_standard(headers, BODY, [whsec_key(secret)], 1_800_000_000.0, 300) == "msg_1"
    with pytest.raises(WebhookRejected):
        verify_standard(headers, BODY, [whsec_key(new_secret())], 1_800_000_000.0, 300)


def test_our_headers_verify_with_the_library() -> None:
    """Headers we sign (the outbound channel and the reference sender) pass standardwebhooks.Webhook.verify."""
    import time

    secret = new_secret()
    headers = standard_headers(whsec_key(secret), "msg_2", int(time.time()), BODY)
    assert standardwebhooks.Webhook(secret).verify(BODY, headers)["type"] == "order.paid"


def test_one_of_several_signatures_suffices_and_stale_is_refused() -> None:
    """A signature list with an unrelated v1 first still verifies; 301 s of skew either way is refused."""
    key = whsec_key(new_secret())
    other = base64.b64decode(new_secret()[6:])
    sig = f"{standard_signature(other, 'm', 100, BODY)} {standard_signature(key, 'm', 100, BODY)}"
    headers = {"webhook-id": "m", "webhook-timestamp": "100", "webhook-signature": sig}
    verify_standard(headers, BODY, [key], 100.0, 300)
    for now in (100.0 + 301, 100.0 - 301):
        with pytest.raises(WebhookRejected, match="tolerance"):
            verify_standard(headers, BODY, [key], now, 300)


@pytest.mark.parametrize(("minutes_ago", "accepted"), [(6, False), (4, True), (-4, True), (-6, False)])
def test_the_library_and_our_adapter_agree_on_the_tolerance(minutes_ago: int, accepted: bool) -> None:
    """On a frozen wall clock: headers stamped 6 minutes ago (or ahead) are refused, 4 minutes accepted, by
    standardwebhooks.Webhook.verify (which reads datetime.now()) and by the daemon's adapter on its SystemClock."""
    secret = new_secret()
    adapter = wall_clock_adapter("standard-webhooks", secret)
    body = json.dumps({"type": "order.paid", "data": {"order_id": "A-1"}}).encode()
    with freeze_time(FROZEN_NOW) as frozen:
        frozen.tick(timedelta(minutes=-minutes_ago))
        headers = standard_headers(whsec_key(secret), "msg_1", int(time.time()), body)  # stamped "now"
        library = standardwebhooks.Webhook(secret)
        assert headers["webhook-signature"] == library.sign("msg_1", datetime.now(tz=UTC), body.decode())
        frozen.move_to(FROZEN_NOW)
        if accepted:
            assert library.verify(body, headers)["type"] == "order.paid"
            assert isinstance(adapter.parse_webhook(headers, body), IncomingOrder)
        else:
            with pytest.raises(standardwebhooks.WebhookVerificationError, match="timestamp too"):
                library.verify(body, headers)
            with pytest.raises(WebhookRejected, match="tolerance"):
                adapter.parse_webhook(headers, body)


async def test_paid_order_is_emailed_and_replays_and_forgeries_change_nothing(tmp_path: Path) -> None:
    """order.paid for 2 units is queued once; the same webhook-id replayed is a duplicate; forged/stale are 403."""
    async with multi_stack(tmp_path) as multi:
        sender = multi.generic()
        data = {"order_id": "A-100", "product_id": "p9", "quantity": 2, "email": "bob@example.org"}
        first = await sender.send("order.paid", data, msg_id="msg_abc")
        assert first.status_code == 200 and first.json()["duplicate"] is False
        replay = await sender.post(sender.sent[-1].body, {k: v for k, v in sender.sent[-1].headers.items()})
        assert replay.json() == {"status": "duplicate", "duplicate": True}
        stale = await sender.send("order.paid", {**data, "order_id": "A-101"}, timestamp=int(multi.clock.now()) - 301)
        assert stale.status_code == 403
        forged = StandardWebhooksSender(multi.hook("generic"), new_secret(), now=multi.clock.now)
        assert (await forged.send("order.paid", {**data, "order_id": "A-102"})).status_code == 403
        job = await multi.job("generic", "A-100")
        assert job.quantity is None and job.received == 1
        assert await multi.job("generic", "A-101") is None and await multi.job("generic", "A-102") is None


async def test_refund_event_cancels_an_undelivered_order(tmp_path: Path) -> None:
    """order.refunded for a queued order cancels it (no email is attempted)."""
    async with multi_stack(tmp_path) as multi:
        sender = multi.generic()
        await sender.send("order.paid", {"order_id": "A-7"})
        assert (await sender.send("order.refunded", {"order_id": "A-7"})).json()["status"] == "cancelled"
        assert await multi.drain() == 0
        assert (await multi.job("generic", "A-7")).state == "cancelled"


async def test_bad_secret_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    """A webhook_secret that is not whsec_<base64> fails at start with its key path."""
    from delivery_daemon.clock import ManualClock
    from delivery_daemon.compose import default_marketplaces
    from delivery_daemon.config import parse_settings
    from delivery_daemon.errors import ConfigError
    from delivery_daemon.pipeline.stores import build_stores

    settings = parse_settings(
        {
            "stores": [
                {
                    "name": "g",
                    "marketplace": "standard-webhooks",
                    "webhook_secret": "whsec_***",
                    "delivery": {
                        "channel": "webhook",
                        "webhook": {"url": "http://127.0.0.1:9/x", "secret": new_secret()},
                    },
                }
            ]
        }
    )
    with pytest.raises(ConfigError, match=r"^stores\[0\]\.webhook_secret: "):
        build_stores(settings, default_marketplaces(), {}, ManualClock())
