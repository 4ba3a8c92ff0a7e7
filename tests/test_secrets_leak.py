"""No secret the daemon handles ever reaches a log line, an HTTP error body or an order's recorded history.

The scenario walks the end-to-end paths that produce the most diagnostics — happy deliveries, 5xx and dropped
deliveries, expired JWTs, the marketplace down, forged and malformed webhooks, an unpaid order, a foreign
``delivery_url`` — with every channel captured, then searches all of it for every secret that exists.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import pytest
from sqlalchemy import text

from tests.conftest import PRODUCT, Stack


def secrets_of(stack: Stack) -> dict[str, set[str]]:
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
    }


def leaks(haystacks: dict[str, str], secrets: dict[str, set[str]]) -> list[str]:
    return [f"{kind} found in {where}" for where, hay in haystacks.items()
            for kind, values in secrets.items() for value in values if value and value in hay]


async def test_no_secret_in_logs_error_bodies_or_history(stack: Stack, caplog: pytest.LogCaptureFixture,
                                                         capfd: pytest.CaptureFixture[str]) -> None:
    """Logs (structlog and stdlib), every error body the receiver sent and the stored history hold no secret."""
    caplog.set_level(logging.DEBUG)
    market, faults = stack.market, stack.market.faults
    bodies: list[str] = []

    async def post(body: bytes | dict[str, Any], **kwargs: Any) -> None:
        response = await stack.post(body, **kwargs)
        if response.status_code >= 300:
            bodies.append(response.text)

    placed = [await market.place_order(PRODUCT, 2) for _ in range(3)]
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

    good = market.webhook_payload(placed[0].id_order)
    await post({**good, "signature": "0" * 40})  # forged
    await post({**good, "delivery_url": "http://evil.example/" + placed[0].token})  # foreign host, real token
    await post(b'{"id_order": "' + placed[1].token.encode() + b'", "signature": 1')  # truncated JSON
    await post(good, content_type="text/plain")
    await post(good, store="no-such-store")
    await post(b"x" * (stack.settings.server.max_body_bytes + 1))
    await post({**good, "id_order": "bad id " + placed[2].token})

    assert all(market.accepted(p.id_order) is not None for p in placed)
    assert market.accepted(unpaid.id_order) is None
    assert len(bodies) == 7
    with stack.daemon.engine.connect() as conn:
        history = conn.execute(text("SELECT coalesce(error, '') FROM attempts")).scalars().all()
        last_errors = conn.execute(text("SELECT coalesce(last_error, '') FROM jobs")).scalars().all()
    out, err = capfd.readouterr()
    haystacks = {
        "structlog": stack.logs.getvalue(),
        "stdlib logging": "\n".join(r.getMessage() + str(r.exc_info or "") for r in caplog.records),
        "stdout/stderr": out + err,
        "error bodies": "\n".join(bodies),
        "attempt history": "\n".join(history + last_errors),
    }
    secrets = secrets_of(stack)
    assert all(secrets[kind] for kind in secrets), "the scenario must have produced every kind of secret"
    assert '"event"' in haystacks["structlog"] and "delivery.retry_scheduled" in haystacks["structlog"]
    assert leaks(haystacks, secrets) == []


def test_leak_search_finds_a_planted_secret() -> None:
    """The search itself works: a secret planted in a log line is reported with its kind and channel."""
    line = json.dumps({"event": "x", "detail": "token abc123secret here"})
    assert leaks({"structlog": line}, {"delivery token": {"abc123secret"}}) == ["delivery token found in structlog"]
